"""What a microgroup sweep records: the request, each size's measured row, the final report."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.runs.models import Run


class Sweep(models.Model):
    """A microgroup sweep: one recipe's rollouts at every microgroup size M, measured."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sweeps"
    )
    run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sweeps",
        help_text="The run whose recipe was swept, if it came from one.",
    )
    recipe = models.JSONField(help_text="The swept recipe; only its microgroup size varies.")
    sizes = models.JSONField(help_text="The microgroup sizes to measure, ascending.")
    rollouts = models.PositiveIntegerField(default=2)
    update = models.BooleanField(default=False, help_text="Train on each rollout too.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    rows = models.JSONField(default=list, help_text="One measured row per size, as they finish.")
    report = models.JSONField(
        null=True, blank=True, help_text="engine.sweep.SweepReport.to_dict() once finished."
    )
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table from when sweeps belonged to the runs app: moving the model kept its rows.
        db_table = "runs_sweep"
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"sweep #{self.pk}"
