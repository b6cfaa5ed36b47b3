"""Who a run made by a management command belongs to."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def owner_named(username: str | None) -> Any:
    """The user ``username``, or with None the only superuser; ``CommandError`` otherwise."""
    users = get_user_model().objects
    if username:
        owner = users.filter(username=username).first()
        if owner is None:
            raise CommandError(f"--owner {username}: no such user")
        return owner
    admins = list(users.filter(is_superuser=True)[:2])
    if len(admins) != 1:
        raise CommandError("say who owns the run: --owner USER")
    return admins[0]
