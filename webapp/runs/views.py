"""Run pages: the list, the New run form, a run's page, and run media.

Every lookup goes through ``Run.objects.visible_to``: another user's run is a 404, on pages and
media files alike. Media paths are checked by ``paths.run_media_file`` before any file is opened.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from engine.presets import PRESETS
from webapp.accounts.authentication import TokenRefused, token_from_header
from webapp.core.sendfile import send_file
from webapp.runs import housekeeping, queue, services
from webapp.runs.compare import recipe_differences
from webapp.runs.export_views import export_context
from webapp.runs.forms import NewRunForm, human_bytes
from webapp.runs.metrics import CHART_POINTS, TRAIN_KEYS, run_metrics
from webapp.runs.models import MAX_ID, ChartPoint, Run, Sample, Tag
from webapp.runs.paths import run_media_file
from webapp.runs.quota import RateLimited

DEFAULT_PRESET = "tiny-color"


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    visible = Run.objects.visible_to(request.user)
    runs = visible.select_related("owner").filtered(request.GET).prefetch_related("tags")
    return render(
        request,
        "runs/list.html",
        {
            "runs": runs[:200],
            "statuses": Run.Status.choices,
            "status": request.GET.get("status", ""),
            "q": request.GET.get("q", ""),
            "tag": request.GET.get("tag", ""),
            "archived": request.GET.get("archived", ""),
            "all_tags": Tag.objects.filter(runs__in=visible).distinct(),
            "disk_total": visible.aggregate(total=Sum("disk_bytes"))["total"] or 0,
        },
    )


@require_http_methods(["GET", "POST"])
def new_run(request: HttpRequest) -> HttpResponse:
    preset = request.POST.get("preset") or request.GET.get("preset") or DEFAULT_PRESET
    if preset not in PRESETS:
        preset = DEFAULT_PRESET
    limited: RateLimited | None = None
    if request.method == "POST":
        too_large = _body_too_large(request)
        if too_large:
            return HttpResponse(too_large, status=413, content_type="text/plain")
        form = NewRunForm(request.POST, request.FILES, preset=preset)
        if form.is_valid() and form.built is not None:
            data = form.cleaned_data
            try:
                run = services.create_run(
                    request.user,
                    data["name"],
                    form.built,
                    preset=preset,
                    notify={
                        "notify_email": data["notify_email"],
                        "webhook_url": data["webhook_url"],
                    },
                    tags=data["tags"],
                )
            except RateLimited as error:
                form.add_error(None, str(error))
                limited = error
            else:
                messages.success(request, f"Run #{run.pk} is queued.")
                return redirect("run-detail-page", run.pk)
    else:
        form = NewRunForm(preset=preset)
    response = render(
        request,
        "runs/new.html",
        {"form": form, "presets": PRESETS.values(), "preset": PRESETS[preset]},
        status=429 if limited else 200,
    )
    if limited:
        response["Retry-After"] = str(limited.retry_after)
    return response


#: Room for the form's text fields on top of the prompt file.
FORM_FIELDS_BYTES = 1024 * 1024


def _body_too_large(request: HttpRequest) -> str:
    """Why the request body is refused unread (too large for any valid form), or ''."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return ""
    limit = settings.GROUPWISE_MAX_UPLOAD_BYTES + FORM_FIELDS_BYTES
    if length <= limit:
        return ""
    return (
        f"The request is {human_bytes(length)}: prompt files may be at most "
        f"{human_bytes(settings.GROUPWISE_MAX_UPLOAD_BYTES)} (GROUPWISE_MAX_UPLOAD_BYTES)."
    )


@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """The live page: a skeleton the browser fills from the run's socket."""
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    return render(
        request,
        "runs/detail.html",
        {
            "run": run,
            "tags_text": ", ".join(run.tags.values_list("name", flat=True)),
            "notifications": run.notifications.all()[:50],
            "sweeps": run.sweeps.filter(owner_id=request.user.pk)[:10],
            "export": export_context(run),
            "train_keys": " ".join(TRAIN_KEYS),
        },
    )


@require_POST
def run_settings(request: HttpRequest, run_id: int) -> HttpResponse:
    """Save the notes, tags and notification settings of the run's page."""
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    try:
        services.update_settings(
            run,
            notes=request.POST.get("notes", "")[:20000],
            tags=request.POST.get("tags", ""),
            notify_email=request.POST.get("notify_email") == "on",
            webhook_url=request.POST.get("webhook_url", ""),
        )
    except services.SettingsError as error:
        for field, problems in error.errors.items():
            messages.error(request, f"{field}: {' '.join(problems)} (nothing was saved)")
    else:
        messages.success(request, "Saved.")
    return redirect(reverse("run-detail-page", args=[run.pk]) + "#manage")


@require_GET
def run_queue(request: HttpRequest) -> HttpResponse:
    """Queued and running runs: place in the queue, host and device; others' runs unnamed."""
    return render(
        request,
        "runs/queue.html",
        {
            "entries": queue.queue_entries(request.user),
            "limit": settings.GROUPWISE_MAX_RUNNING_PER_USER,
        },
    )


GALLERY_PAGE = 60
GALLERY_ORDERS = {
    "group": ("group_index", "-reward"),
    "best": ("-reward", "group_index"),
    "worst": ("reward", "group_index"),
}


@require_GET
def run_gallery(request: HttpRequest, run_id: int) -> HttpResponse:
    """Every stored step of a run: a step slider, prompt filter and search, best / worst first,
    and one prompt's evolution across steps. Paginated, so any number of samples is fine."""
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    live = Sample.objects.filter(run=run, superseded=False)
    # A stored rollout's step is its chart point's: thousands of points, where the sample rows
    # are hundreds of thousands (a run of 5,000 rollouts of 128 samples).
    steps = list(
        ChartPoint.objects.filter(run=run, series="reward", superseded=False)
        .order_by("step")
        .values_list("step", flat=True)
    )
    step = _step_param(request, steps)
    # The prompt filter lists the shown step's prompts, not every prompt the run has seen.
    # Sorted here: ordered in SQL, SQLite walks the run's whole prompt index instead.
    prompts = sorted(set(live.filter(step=step).values_list("prompt", flat=True)))
    prompt = request.GET.get("prompt", "")
    query = request.GET.get("q", "").strip()
    order = request.GET.get("order", "group")
    if order not in GALLERY_ORDERS:
        order = "group"
    evolution = request.GET.get("view") == "evolution" and bool(prompt)
    if evolution:
        # One prompt across steps: its best sample of each rollout, in step order.
        samples = live.filter(prompt=prompt).order_by("step", "-reward").distinct()
        strip: dict[int, Sample] = {}
        for sample in samples.iterator():
            strip.setdefault(sample.step, sample)
        shown = list(strip.values())
        page_obj = None
    else:
        selected = live.filter(step=step)
        if prompt:
            selected = selected.filter(prompt=prompt)
        if query:
            selected = selected.filter(prompt__icontains=query)
        page_obj = Paginator(selected.order_by(*GALLERY_ORDERS[order]), GALLERY_PAGE).get_page(
            request.GET.get("page")
        )
        shown = list(page_obj.object_list)
    return render(
        request,
        "runs/gallery.html",
        {
            "run": run,
            "steps": steps,
            # The slider's stops, joined here: a template loop over thousands of steps is most
            # of a long run's page time.
            "steps_text": ",".join(map(str, steps)),
            "step": step,
            "step_index": steps.index(step) if step in steps else 0,
            "prompts": prompts,
            "prompt": prompt,
            "q": query,
            "order": order,
            "evolution": evolution,
            "samples": shown,
            "page_obj": page_obj,
        },
    )


MAX_COMPARED = 8


def _step_param(request: HttpRequest, steps: list[int]) -> int:
    """The ``?step=`` asked for, else the latest stored step (also for text, or a number past
    the database's integers, which no step can be)."""
    latest = steps[-1] if steps else 0
    try:
        step = int(request.GET.get("step", latest))
    except ValueError:
        return latest
    return step if abs(step) <= MAX_ID else latest


@require_GET
def compare_runs(request: HttpRequest) -> HttpResponse:
    """Two or more runs side by side: recipe differences, reward curves, one prompt's groups."""
    try:
        ids = [int(i) for i in request.GET.getlist("ids") if i]
    except ValueError:
        ids = []
    # An id past the database's integers names no run (and would fail the query).
    ids = [i for i in ids if 0 < i <= MAX_ID]
    runs = list(Run.objects.visible_to(request.user).filter(pk__in=ids[:MAX_COMPARED]))
    if len(runs) < 2:
        messages.error(request, "Pick two or more of your runs to compare.")
        return redirect("run-list")
    runs.sort(key=lambda run: ids.index(run.pk))
    live = Sample.objects.filter(run__in=runs, superseded=False)
    prompts = sorted(set(live.values_list("prompt", flat=True).distinct()[:500]))
    prompt = request.GET.get("prompt") or (prompts[0] if prompts else "")
    steps = sorted(set(live.values_list("step", flat=True).distinct()))
    step = _step_param(request, steps)
    columns = [
        {
            "run": run,
            "samples": list(
                live.filter(run=run, prompt=prompt, step=step).order_by("-reward")[:64]
            ),
        }
        for run in runs
    ]
    curves = [
        {
            "id": run.pk,
            "name": f"#{run.pk} {run.name}",
            "reward": run_metrics(run, points=CHART_POINTS)["reward"],
        }
        for run in runs
    ]
    return render(
        request,
        "runs/compare.html",
        {
            "runs": runs,
            "differences": recipe_differences([run.recipe for run in runs]),
            "prompts": prompts,
            "prompt": prompt,
            "steps": steps,
            "step": step,
            "columns": columns,
            "curves": curves,
            "ids": ",".join(str(run.pk) for run in runs),
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
        elif action in ("archive", "unarchive"):
            housekeeping.set_archived(run, action == "archive")
            state = "archived" if run.archived else "restored"
            messages.info(request, f"Run #{run.pk} is {state}.")
        elif action == "delete":
            housekeeping.delete_run(run)
            messages.info(request, f"Run #{run.pk} and its files are deleted.")
            return redirect("run-list")
        elif action == "clone":
            clone = services.clone_run(run, request.user)
            messages.success(request, f"Run #{clone.pk} is queued, a clone of #{run.pk}.")
            return redirect("run-detail-page", clone.pk)
        else:
            raise Http404("no such action")
    except (services.TransitionError, housekeeping.HousekeepingError, RateLimited) as error:
        messages.error(request, str(error))
    return redirect("run-detail-page", run.pk)


@login_not_required
@require_GET
def run_media(request: HttpRequest, run_id: int, path: str) -> HttpResponseBase:
    """A run's images, for its owner (and staff) only; anything else is a 404.

    The caller is the browser session's user or, for scripts, the user of an API token sent as
    ``Authorization: Bearer <token>`` (read-only tokens too: this only reads). Neither: the
    login page, as everywhere; a refused token: 401 saying why.

    ``path`` must name a file inside the run's own folder: ``..`` segments, absolute paths and
    symlinks leading out are refused before anything is opened.
    """
    user: Any = request.user
    if not user.is_authenticated:
        try:
            token = token_from_header(request)
        except TokenRefused as refused:
            answer = HttpResponse(str(refused), status=401, content_type="text/plain")
            answer["WWW-Authenticate"] = 'Bearer realm="api"'
            return answer
        if token is None:
            return redirect_to_login(request.get_full_path())
        user = token.user
    if not Run.objects.visible_to(user).filter(pk=run_id).exists():
        raise Http404("no such media file")
    target = run_media_file(run_id, path)
    if target is None:
        raise Http404("no such media file")
    internal = ""
    if settings.GROUPWISE_ACCEL_REDIRECT:
        internal = settings.GROUPWISE_ACCEL_REDIRECT + quote(f"runs/{run_id}/{path}")
    response = send_file(request, target, internal_url=internal)
    # Who may have it depends on the token as much as on the session cookie.
    patch_vary_headers(response, ["Authorization"])
    return response
