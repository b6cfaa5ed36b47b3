"""Rows that describe the deployment itself rather than any run."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerHeartbeatQuerySet(models.QuerySet["WorkerHeartbeat"]):
    def live(self, now: datetime | None = None) -> WorkerHeartbeatQuerySet:
        """Workers that have not stopped and beat within ``WORKER_LIVE_SECONDS`` of ``now``."""
        now = now or timezone.now()
        cutoff = now - timedelta(seconds=settings.WORKER_LIVE_SECONDS)
        return self.filter(stopped_at__isnull=True, last_seen__gte=cutoff)


class WorkerHeartbeat(models.Model):
    """One Celery worker process, refreshed every ``WORKER_HEARTBEAT_SECONDS`` while it runs.

    Liveness comes from these rows, not from broker broadcasts: the embedded broker has no fanout,
    and a killed worker simply stops refreshing its row.
    """

    name = models.CharField(max_length=255, help_text="Celery node name, e.g. gpu@host.")
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    pid_namespace = models.CharField(
        max_length=64,
        blank=True,
        help_text="The process's pid namespace (Linux), e.g. pid:[4026531836]: only a process in "
        "the same one may judge by the pid whether it still runs.",
    )
    queues = models.JSONField(default=list, help_text="Queues the worker consumes.")
    current_run_id = models.BigIntegerField(
        null=True, blank=True, help_text="The run the worker is executing, if any."
    )
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by a clean shutdown; a killed worker leaves it empty."
    )

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "host", "pid"], name="unique_worker_process")
        ]
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def is_live(self, now: datetime | None = None) -> bool:
        """Whether this worker counts as live at ``now``."""
        now = now or timezone.now()
        age = (now - self.last_seen).total_seconds()
        return self.stopped_at is None and age <= settings.WORKER_LIVE_SECONDS
