"""Microgroup sweeps on the web side: create one, run it in a worker, draw its charts.

The measuring is the engine's (``engine.sweep``); this module stores the request, claims it in a
worker with a conditional update, saves each size's row as soon as it is measured (so the page
fills in while the sweep runs) and the whole report at the end.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from engine.problems import Problem, RecipeError
from engine.recipe import Recipe
from engine.sweep import SweepRow, sweep_sizes
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run, Sweep

logger = logging.getLogger(__name__)

#: Rollouts per size allowed from the web: a sweep is a measurement, not a run.
MAX_ROLLOUTS = 20


def create_sweep(
    owner: Any,
    recipe: Recipe,
    *,
    sizes: Sequence[int] | None = None,
    rollouts: int = 2,
    update: bool = False,
    run: Run | None = None,
) -> Sweep:
    """Store a queued sweep and enqueue it once committed; ``RecipeError`` for bad arguments."""
    if rollouts > MAX_ROLLOUTS:
        raise RecipeError([Problem("rollouts", f"rollouts={rollouts}: use 1 to {MAX_ROLLOUTS}")])
    chosen = sweep_sizes(recipe, sizes, rollouts)
    sweep = Sweep.objects.create(
        owner=owner,
        run=run,
        recipe=recipe.to_dict(),
        sizes=list(chosen),
        rollouts=rollouts,
        update=update,
    )
    from webapp.runs.tasks import run_sweep

    sweep_id = sweep.pk
    transaction.on_commit(lambda: run_sweep.delay(sweep_id))
    return sweep


def worker_id() -> str:
    """This process as a sweep records it: host and pid, matched against heartbeats."""
    return f"{socket.gethostname()}:{os.getpid()}"


def measure_sweep(sweep_id: int) -> str:
    """Measure sweep ``sweep_id`` if it is still queued; the status it ended with."""
    from engine.sweep import sweep as measure

    claimed = Sweep.objects.filter(pk=sweep_id, status=Sweep.Status.QUEUED).update(
        status=Sweep.Status.RUNNING, started_at=timezone.now(), worker=worker_id()
    )
    if not claimed:
        return "skipped"
    row = Sweep.objects.get(pk=sweep_id)
    rows: list[dict[str, Any]] = []

    def on_result(result: SweepRow) -> None:
        rows.append(result.to_dict())
        Sweep.objects.filter(pk=sweep_id).update(rows=rows)

    status, error, report = Sweep.Status.FAILED, "", None
    try:
        report = measure(
            Recipe.from_dict(row.recipe),
            sizes=row.sizes,
            rollouts=row.rollouts,
            update=row.update,
            model_dir=settings.GROUPWISE_MODEL_DIR,
            on_result=on_result,
        ).to_dict()
        status = Sweep.Status.FINISHED
    except RecipeError as problem:
        error = str(problem)
    except Exception as problem:
        logger.exception("sweep %s failed", sweep_id)
        error = f"{type(problem).__name__}: {problem}"
    Sweep.objects.filter(pk=sweep_id).update(
        status=status, error=error, report=report, finished_at=timezone.now()
    )
    return str(status)


def fail_orphaned_sweeps(now: datetime | None = None) -> list[int]:
    """Mark running sweeps whose worker process no longer beats as failed; their ids."""
    now = now or timezone.now()
    live = {
        f"{host}:{pid}"
        for host, pid in WorkerHeartbeat.objects.live(now).values_list("host", "pid")
    }
    claimed_before = now - timedelta(seconds=settings.WORKER_LIVE_SECONDS)
    failed = []
    for sweep in Sweep.objects.filter(status=Sweep.Status.RUNNING, started_at__lt=claimed_before):
        if sweep.worker in live:
            continue
        if Sweep.objects.filter(pk=sweep.pk, status=Sweep.Status.RUNNING).update(
            status=Sweep.Status.FAILED,
            error=f"worker {sweep.worker} stopped sending heartbeats: launch the sweep again",
            finished_at=now,
        ):
            failed.append(sweep.pk)
    return failed


def chart(
    rows: Sequence[dict[str, Any]], key: str, *, width: int = 420, height: int = 180
) -> dict[str, Any]:
    """An SVG line chart of ``key`` against M: points, axis labels, and the plot's size."""
    pad = 36
    values = [(int(r["microgroup_size"]), float(r[key])) for r in rows]
    if not values:
        return {"points": "", "dots": [], "width": width, "height": height, "max": 0}
    top = max(v for _, v in values) or 1.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    dots = [
        {
            "x": round(pad + i * step, 1),
            "y": round(height - pad - (v / top) * (height - 2 * pad), 1),
            "m": m,
            "value": v,
        }
        for i, (m, v) in enumerate(values)
    ]
    return {
        "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "width": width,
        "height": height,
        "max": top,
        "baseline": height - pad,
        "pad": pad,
    }
