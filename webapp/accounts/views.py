"""The API tokens page: create a token (shown once) with its scope and expiry, list one's own
tokens with their last use, revoke one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from webapp.accounts.models import ApiToken

#: The expiry choices the page offers, in days; '' is never.
EXPIRY_DAYS = (7, 30, 90, 365)
MAX_EXPIRY_DAYS = 3650


@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    created = None
    status = 200
    if request.method == "POST":
        if "revoke" in request.POST:
            revoke = request.POST.get("revoke", "")
            # Only an id the database can hold; anything else names no token.
            if _whole_number(revoke, digits=18):
                ApiToken.objects.filter(user=user, pk=int(revoke)).delete()
            messages.info(request, "Token revoked.")
            return HttpResponseRedirect(reverse("tokens"))
        name = (request.POST.get("name") or "").strip()[:100] or "token"
        try:
            scope = _scope(request.POST.get("scope", ""))
            days = _expiry_days(request.POST.get("expires_in_days", ""))
        except ValueError as error:
            messages.error(request, f"Token not created: {error}")
            status = 400
        else:
            expires_at = timezone.now() + timedelta(days=days) if days else None
            _row, created = ApiToken.issue(user, name, scope=scope, expires_at=expires_at)
    return render(
        request,
        "accounts/tokens.html",
        {
            "tokens": ApiToken.objects.filter(user=user),
            "created": created,
            "scopes": ApiToken.Scope.choices,
            "expiry_days": EXPIRY_DAYS,
            "now": timezone.now(),
        },
        status=status,
    )


def _scope(text: str) -> str:
    """The posted scope; none posted is ``write``, as tokens were before scopes."""
    if not text:
        return ApiToken.Scope.WRITE
    if text not in ApiToken.Scope.values:
        raise ValueError(f"scope '{text[:20]}': use read or write")
    return text


def _expiry_days(text: str) -> int:
    """Days until the token expires; 0 (none posted) is never."""
    if not text:
        return 0
    if not _whole_number(text, digits=4) or not 1 <= int(text) <= MAX_EXPIRY_DAYS:
        raise ValueError(f"expiry '{text[:20]}': give 1 to {MAX_EXPIRY_DAYS} days, or never")
    return int(text)


def _whole_number(text: str, *, digits: int) -> bool:
    # ASCII only: str.isdigit() accepts '²', which int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= digits
