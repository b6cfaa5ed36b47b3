"""Run pages: the list, the New run form, a run's page, API tokens, and run media.

Every lookup goes through ``Run.objects.visible_to``: another user's run is a 404, on pages and
media files alike.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.static import serve

from engine.presets import PRESETS
from webapp.runs import services
from webapp.runs.forms import NewRunForm
from webapp.runs.models import ApiToken, Run

DEFAULT_PRESET = "tiny-color"


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.visible_to(request.user).select_related("owner")
    status = request.GET.get("status", "")
    if status:
        runs = runs.filter(status=status)
    return render(
        request,
        "runs/list.html",
        {"runs": runs[:200], "statuses": Run.Status.choices, "status": status},
    )


@require_http_methods(["GET", "POST"])
def new_run(request: HttpRequest) -> HttpResponse:
    preset = request.POST.get("preset") or request.GET.get("preset") or DEFAULT_PRESET
    if preset not in PRESETS:
        preset = DEFAULT_PRESET
    if request.method == "POST":
        form = NewRunForm(request.POST, request.FILES, preset=preset)
        if form.is_valid() and form.built is not None:
            run = services.create_run(
                request.user, form.cleaned_data["name"], form.built, preset=preset
            )
            messages.success(request, f"Run #{run.pk} is queued.")
            return redirect("run-detail-page", run.pk)
    else:
        form = NewRunForm(preset=preset)
    return render(
        request,
        "runs/new.html",
        {"form": form, "presets": PRESETS.values(), "preset": PRESETS[preset]},
    )


@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    latest_step = (
        run.samples.filter(superseded=False)
        .order_by("-step")
        .values_list("step", flat=True)
        .first()
    )
    samples = (
        run.samples.filter(superseded=False, step=latest_step).order_by("group_index", "-reward")
        if latest_step is not None
        else run.samples.none()
    )
    groups: dict[int, dict[str, Any]] = {}
    for sample in samples:
        group = groups.setdefault(sample.group_index, {"prompt": sample.prompt, "samples": []})
        group["samples"].append(sample)
    return render(
        request,
        "runs/detail.html",
        {
            "run": run,
            "groups": groups.values(),
            "latest_step": latest_step,
            "events": run.events.filter(superseded=False).order_by("-seq")[:30],
            "checkpoints": run.checkpoints.all(),
        },
    )


@require_POST
def run_action(request: HttpRequest, run_id: int, action: str) -> HttpResponse:
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    try:
        if action == "cancel":
            services.cancel_run(run)
            messages.info(request, f"Run #{run.pk}: {run.status}.")
        elif action == "resume":
            services.resume_run(run)
            messages.info(request, f"Run #{run.pk} is queued to resume.")
        elif action == "clone":
            clone = services.clone_run(run, request.user)
            messages.success(request, f"Run #{clone.pk} is queued, a clone of #{run.pk}.")
            return redirect("run-detail-page", clone.pk)
        else:
            raise Http404("no such action")
    except services.TransitionError as error:
        messages.error(request, str(error))
    return redirect("run-detail-page", run.pk)


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
        "runs/tokens.html",
        {"tokens": ApiToken.objects.filter(user=user), "created": created},
    )


@require_GET
def run_media(request: HttpRequest, run_id: int, path: str) -> HttpResponseBase:
    """A run's images, for its owner (and staff) only; anything else is a 404."""
    if not Run.objects.visible_to(request.user).filter(pk=run_id).exists():
        raise Http404("no such media file")
    try:
        return serve(request, f"runs/{run_id}/{path}", document_root=str(settings.MEDIA_ROOT))
    except SuspiciousFileOperation:
        raise Http404("no such media file") from None
