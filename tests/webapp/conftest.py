"""Web personas: the owner of a run, another user, and staff."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("owner", password="owner-pass-123")


@pytest.fixture
def other(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("other", password="other-pass-123")


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True)
