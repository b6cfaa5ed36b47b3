"""The API tokens page: create a token (shown once), list and revoke one's own tokens."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from webapp.accounts.models import ApiToken


@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    created = None
    if request.method == "POST":
        if "revoke" in request.POST:
            ApiToken.objects.filter(user=user, pk=request.POST.get("revoke") or 0).delete()
            messages.info(request, "Token revoked.")
            return HttpResponseRedirect(reverse("tokens"))
        name = (request.POST.get("name") or "").strip()[:100] or "token"
        _row, created = ApiToken.issue(user, name)
    return render(
        request,
        "accounts/tokens.html",
        {"tokens": ApiToken.objects.filter(user=user), "created": created},
    )
