"""Runs whose worker died: found through heartbeats, marked interrupted, optionally resumed.

A running (or cancelling) run is orphaned when no live worker's heartbeat names it as its current
run and it was claimed longer than ``WORKER_LIVE_SECONDS`` ago (a worker beats as soon as it
takes a run, so a fresh claim is never mistaken). A worker whose process is known to be gone (on
this host, its pid not alive: ``heartbeat.gone_processes``) is not waited for: its run is orphaned
at once, so a worker that ``serve`` starts again recovers the run of the one that died. Every
worker checks on each beat and at start-up, each web process on a timer
(``webapp.core.watchdog``) and on every health report, so a killed worker's run is interrupted
within the live window plus one beat, with no request needed. With ``GROUPWISE_AUTO_RESUME`` the
run is queued again at once and continues from its last checkpoint on the next free worker.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from webapp.core.heartbeat import gone_processes
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run

logger = logging.getLogger(__name__)


def interrupt_orphaned_runs(now: datetime | None = None) -> list[int]:
    """Mark orphaned runs interrupted (and queue them again with auto-resume); their ids."""
    now = now or timezone.now()
    claimed_before = now - timedelta(seconds=settings.WORKER_LIVE_SECONDS)
    beating = WorkerHeartbeat.objects.live(now)
    gone = {row.current_run_id: row for row in gone_processes(beating) if row.current_run_id}
    alive = beating.exclude(pk__in=[row.pk for row in gone.values()]).exclude(current_run_id=None)
    orphans = (
        Run.objects.filter(status__in=(Run.Status.RUNNING, Run.Status.CANCELLING))
        .filter(Q(started_at__lt=claimed_before) | Q(pk__in=list(gone)))
        .exclude(pk__in=alive.values("current_run_id"))
    )
    interrupted = []
    for run in orphans:
        dead = gone.get(run.pk)
        if dead is not None and run.started_at and dead.last_seen < run.started_at:
            # The gone process last beat before this claim: another worker claimed the run since
            # and has not beaten yet, so only the usual window applies.
            dead = None
            if run.started_at >= claimed_before:
                continue
        if dead is not None:
            message = (
                f"worker {dead.name} (pid {dead.pid}) is gone: resume to continue from the "
                "last checkpoint"
            )
        else:
            message = (
                f"worker {run.worker or '?'} stopped sending heartbeats: resume to continue "
                "from the last checkpoint"
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
