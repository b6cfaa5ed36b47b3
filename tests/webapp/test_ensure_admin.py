"""The first-start admin account: created once, with a usable printed password."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_creates_admin_once_and_prints_a_working_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPWISE_ADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    match = re.search(r"user 'admin', password '([^']+)'", out.getvalue())
    assert match, out.getvalue()
    assert authenticate(username="admin", password=match.group(1)) is not None

    again = StringIO()
    call_command("ensure_admin", stdout=again)
    assert "password '" not in again.getvalue()
    assert "changepassword admin" in again.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_takes_name_and_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPWISE_ADMIN_USER", "ada")
    monkeypatch.setenv("GROUPWISE_ADMIN_PASSWORD", "correct-horse-battery")
    call_command("ensure_admin", stdout=StringIO())
    assert authenticate(username="ada", password="correct-horse-battery") is not None
