"""Token authentication for scripts: ``Authorization: Bearer gw_…`` (or ``Token gw_…``).

``token_from_header`` is the one lookup, shared by the API (``ApiTokenAuthentication``) and the
media files (``webapp.runs.views.run_media``). A read-only token is refused on any unsafe method
at authentication, so no API view can forget the check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from webapp.accounts.models import ApiToken
from webapp.core.client_address import client_address

#: last_used_at and last_used_from are refreshed at most this often, so every API call is not
#: also a write.
TOUCH_EVERY = timedelta(minutes=1)
KEYWORDS = ("bearer", "token")


class TokenRefused(Exception):
    """The Authorization header names no usable token; the message says why and what to do."""


def token_from_header(request: HttpRequest | Request) -> ApiToken | None:
    """The token ``request``'s Authorization header names (its use recorded), None when the
    header names no token; ``TokenRefused`` for a malformed, unknown, revoked or expired one."""
    header = authentication.get_authorization_header(request).decode(errors="replace").split()
    if not header or header[0].lower() not in KEYWORDS:
        return None
    if len(header) != 2:
        raise TokenRefused("Malformed Authorization header: send 'Authorization: Bearer <token>'.")
    token = (
        ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(header[1])).first()
    )
    if token is None or not token.user.is_active:
        raise TokenRefused("Invalid or revoked token: create one on the API tokens page.")
    now = timezone.now()
    if token.expired(now):
        assert token.expires_at is not None
        raise TokenRefused(
            f"Token '{token.name}' expired at {token.expires_at:%Y-%m-%d %H:%M} UTC: "
            "create a new one on the API tokens page."
        )
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        address = client_address(request.META)
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_from=address)
    return token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        try:
            token = token_from_header(request)
        except TokenRefused as refused:
            raise exceptions.AuthenticationFailed(str(refused)) from None
        if token is None:
            return None
        if token.scope == ApiToken.Scope.READ and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied(
                f"Token '{token.name}' is read-only: {request.method} needs a read-and-write "
                "token (create one on the API tokens page)."
            )
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Describes the token scheme in the OpenAPI schema (Swagger's Authorize button)."""

    target_class = "webapp.accounts.authentication.ApiTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}
