"""What a user holds besides their login: the API tokens their scripts authenticate with."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A named API token; only its SHA-256 is stored, the token is shown once at creation.

    A ``read`` token may only read (GET, HEAD, OPTIONS): for dashboards and CI jobs that watch.
    A token past ``expires_at`` is refused. ``last_used_at`` and ``last_used_from`` (the client's
    address) are refreshed at most once a minute (``authentication.TOUCH_EVERY``).
    """

    PREFIX = "gw_"

    class Scope(models.TextChoices):
        READ = "read", "read only"
        WRITE = "write", "read and write"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.WRITE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_from = models.CharField(
        max_length=64, blank=True, help_text="The client address of the last use."
    )

    class Meta:
        # The table from when tokens belonged to the runs app: moving the model kept its rows.
        db_table = "runs_apitoken"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(
        cls,
        user: Any,
        name: str,
        *,
        scope: str = Scope.WRITE,
        expires_at: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns the row and the token text (not stored)."""
        token = cls.PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(
            user=user,
            name=name,
            digest=cls.digest_of(token),
            scope=scope,
            expires_at=expires_at,
        )
        return row, token

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
