"""Runs whose worker died: found through heartbeats, marked interrupted, optionally resumed.

A running (or cancelling) run is orphaned when no live worker's heartbeat names it as its current
run and it was claimed longer than ``WORKER_LIVE_SECONDS`` ago (a worker beats as soon as it
takes a run, so a fresh claim is never mistaken). Every worker checks on each beat and at start-up,
and the web process on every health report, so a killed worker's run is interrupted within the
live window plus one beat. With ``GROUPWISE_AUTO_RESUME`` the run is queued again at once and
continues from its last checkpoint on the next free worker.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run

logger = logging.getLogger(__name__)


def interrupt_orphaned_runs(now: datetime | None = None) -> list[int]:
    """Mark orphaned runs interrupted (and queue them again with auto-resume); their ids."""
    now = now or timezone.now()
    claimed_before = now - timedelta(seconds=settings.WORKER_LIVE_SECONDS)
    alive = WorkerHeartbeat.objects.live(now).exclude(current_run_id=None)
    orphans = (
        Run.objects.filter(status__in=(Run.Status.RUNNING, Run.Status.CANCELLING))
        .filter(started_at__lt=claimed_before)
        .exclude(pk__in=alive.values("current_run_id"))
    )
    interrupted = []
    for run in orphans:
        message = (
            f"worker {run.worker or '?'} stopped sending heartbeats: resume to continue from "
            "the last checkpoint"
        )
        # Conditional: a worker that beats again in between keeps its run.
        if Run.objects.filter(pk=run.pk, status=run.status).update(
            status=Run.Status.INTERRUPTED, error=message, finished_at=now
        ):
            interrupted.append(run.pk)
            logger.warning("run %s interrupted: %s", run.pk, message)
    from webapp.runs.tasks import after_run

    for run_id in interrupted:
        after_run(run_id)
    if interrupted and settings.GROUPWISE_AUTO_RESUME:
        from webapp.runs.services import resume_run

        for run in Run.objects.filter(pk__in=interrupted):
            resume_run(run)
    return interrupted


def on_liveness_checked(sender: Any, **kwargs: Any) -> None:
    """``webapp.core.heartbeat.liveness_checked`` receiver: recover dead workers' runs."""
    interrupt_orphaned_runs()
