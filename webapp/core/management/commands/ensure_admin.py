"""Create a local admin account when no superuser exists, and say how to log in."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create a superuser (GROUPWISE_ADMIN_USER, default 'admin'; password from "
        "GROUPWISE_ADMIN_PASSWORD or generated) unless one exists, and print how to log in."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        existing = user_model.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            name = existing.get_username()
            self.stdout.write(
                f"Log in as '{name}'. Forgot the password? "
                f".venv/bin/python manage.py changepassword {name}"
            )
            return
        username = os.environ.get("GROUPWISE_ADMIN_USER") or "admin"
        password = os.environ.get("GROUPWISE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the admin account: user '{username}', password '{password}'"
            )
        )
        self.stdout.write("Keep it: it is shown only once (change it later under Admin).")
