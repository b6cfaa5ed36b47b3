"""System checks run by every management command, `manage.py serve` included."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security)
def development_secret_key(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Warn while SECRET_KEY is the built-in development key (sessions could be forged)."""
    if settings.SECRET_KEY != settings.DEV_SECRET_KEY:
        return []
    return [
        Warning(
            "SECRET_KEY is the built-in development key.",
            hint="Fine on your own machine; anywhere reachable by others set SECRET_KEY to a "
            "long random value, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
            id="groupwise.W001",
        )
    ]
