"""Sweep pages: launch one from a run, the list (comparable across machines), one result."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from engine.problems import RecipeError
from engine.recipe import Recipe
from webapp.runs import services
from webapp.runs.models import Run
from webapp.runs.quota import RateLimited
from webapp.sweeps.charts import chart
from webapp.sweeps.models import Sweep
from webapp.sweeps.services import create_sweep


def visible_sweeps(user: Any) -> Any:
    sweeps = Sweep.objects.select_related("owner", "run")
    return sweeps if getattr(user, "is_staff", False) else sweeps.filter(owner=user)


def parse_sizes(text: str) -> list[int] | None:
    """``"1, 2,4"`` -> [1, 2, 4]; empty means every valid size; ``ValueError`` otherwise."""
    parts = [part for part in text.replace(",", " ").split() if part]
    if not parts:
        return None
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"sizes '{text[:50]}': give whole numbers such as 1, 2, 4, 8") from None


@require_POST
def launch_sweep(request: HttpRequest, run_id: int) -> HttpResponse:
    """A sweep of the run's recipe at the sizes asked for (every valid one by default)."""
    run = get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)
    try:
        sizes = parse_sizes(request.POST.get("sizes", ""))
        rollouts = int(request.POST.get("rollouts") or 2)
        sweep = create_sweep(
            request.user,
            Recipe.from_dict(run.recipe),
            sizes=sizes,
            rollouts=rollouts,
            update=request.POST.get("update") == "on",
            run=run,
        )
    except ValueError as error:
        messages.error(request, f"Sweep not started: {error}")
        return redirect("run-detail-page", run.pk)
    except RecipeError as error:
        for problem in error.problems:
            messages.error(request, f"Sweep not started: {problem.field}: {problem.message}")
        return redirect("run-detail-page", run.pk)
    except RateLimited as error:
        messages.error(request, f"Sweep not started: {error}")
        return redirect("run-detail-page", run.pk)
    messages.success(request, f"Sweep #{sweep.pk} is queued.")
    return redirect("sweep-detail", sweep.pk)


@require_GET
def sweep_list(request: HttpRequest) -> HttpResponse:
    return render(request, "sweeps/list.html", {"sweeps": visible_sweeps(request.user)[:200]})


@require_GET
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = get_object_or_404(visible_sweeps(request.user), pk=sweep_id)
    report = sweep.report or {}
    rows = report.get("rows") or sweep.rows
    return render(
        request,
        "sweeps/detail.html",
        {
            "sweep": sweep,
            "rows": rows,
            "report": report,
            "best": report.get("best_size"),
            "charts": [
                ("End-to-end images/s", chart(rows, "end_to_end_images_per_second")),
                ("Generation images/s", chart(rows, "images_per_second")),
                ("DiT forwards/s", chart(rows, "dit_forwards_per_second")),
                ("Peak memory (MB)", chart(_in_mb(rows), "peak_memory_mb")),
            ],
            "phases": sorted({name for row in rows for name in row["phase_seconds"]}),
            "live": sweep.status in (Sweep.Status.QUEUED, Sweep.Status.RUNNING),
        },
    )


@require_POST
def launch_best(request: HttpRequest, sweep_id: int) -> HttpResponse:
    """A new run with the sweep's recipe at its best microgroup size."""
    sweep = get_object_or_404(visible_sweeps(request.user), pk=sweep_id)
    best = (sweep.report or {}).get("best_size")
    if best is None:
        messages.error(request, "The sweep has no result yet: wait until it finishes.")
        return redirect("sweep-detail", sweep.pk)
    try:
        recipe = services.build_recipe(
            recipe=sweep.recipe, overrides={"diffusion_microgroup_size": best}
        )
    except RecipeError as error:
        for problem in error.problems:
            messages.error(request, f"{problem.field}: {problem.message}")
        return redirect("sweep-detail", sweep.pk)
    source = sweep.run
    name = f"{source.name if source else 'sweep'} (M={best})"
    try:
        run = services.create_run(
            request.user, name, recipe, preset=source.preset if source else ""
        )
    except RateLimited as error:
        messages.error(request, str(error))
        return redirect("sweep-detail", sweep.pk)
    messages.success(request, f"Run #{run.pk} is queued with diffusion_microgroup_size={best}.")
    return redirect("run-detail-page", run.pk)


def _in_mb(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "peak_memory_mb": row["peak_memory_bytes"] / 2**20} for row in rows]
