"""Sweeps whose worker died: found through heartbeats and marked failed (a sweep is a measurement,
launched again rather than resumed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from webapp.core.models import WorkerHeartbeat
from webapp.sweeps.models import Sweep


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


def on_liveness_checked(sender: Any, **kwargs: Any) -> None:
    """``webapp.core.heartbeat.liveness_checked`` receiver: fail dead workers' sweeps."""
    fail_orphaned_sweeps()
