"""Measuring a sweep in a worker: claim it, save each size's row as soon as it is measured (so the
page fills in while the sweep runs) and the whole report at the end.

The sweep is claimed with a conditional update (queued -> running), so a second delivery of the
same message does nothing; the claim records this process (``worker_id``), which
``webapp.sweeps.recovery`` matches against heartbeats.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from django.conf import settings
from django.utils import timezone

from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.sweep import SweepRow
from engine.sweep import sweep as measure
from webapp.sweeps.models import Sweep

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """This process as a sweep records it: host and pid, matched against heartbeats."""
    return f"{socket.gethostname()}:{os.getpid()}"


def measure_sweep(sweep_id: int) -> str:
    """Measure sweep ``sweep_id`` if it is still queued; the status it ended with."""
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
