"""What a run records. The database, not the socket, is the record (DESIGN.md section 3)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

#: The largest id or count a query may name: the databases' 64-bit integers end here.
MAX_ID = 2**63 - 1


class RunQuerySet(models.QuerySet["Run"]):
    def visible_to(self, user: Any) -> RunQuerySet:
        """Runs the user may see and act on: their own, or all for staff."""
        if getattr(user, "is_staff", False):
            return self
        return self.filter(owner=user)

    def filtered(self, params: Any) -> RunQuerySet:
        """The runs list's filters, shared by the page and the API: status, tag, search, archived.

        ``q`` matches the name, the notes and the tags; archived runs are hidden unless
        ``archived`` is ``yes`` (only those) or ``all``.
        """
        runs = self
        status = params.get("status", "")
        if status:
            runs = runs.filter(status=status)
        tag = params.get("tag", "").strip().lower()
        if tag:
            runs = runs.filter(tags__name=tag)
        query = params.get("q", "").strip()
        if query:
            runs = runs.filter(
                models.Q(name__icontains=query)
                | models.Q(notes__icontains=query)
                | models.Q(tags__name__icontains=query)
            ).distinct()
        archived = params.get("archived", "")
        if archived == "yes":
            runs = runs.filter(archived=True)
        elif archived != "all":
            runs = runs.filter(archived=False)
        return runs


class Tag(models.Model):
    """A label on runs; runs are filtered and searched by their tags."""

    name = models.CharField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    """One training run: its recipe, where it stands, and how to reproduce it."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"
        FINISHED = "finished"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)
    RESUMABLE = (Status.INTERRUPTED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs"
    )
    name = models.CharField(max_length=200)
    preset = models.CharField(
        max_length=100, blank=True, help_text="Preset the recipe started from."
    )
    recipe = models.JSONField(help_text="The validated recipe (engine.recipe.Recipe.to_dict()).")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When it last joined the queue; orders the queue."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="Worker that runs or ran it.")
    step = models.PositiveIntegerField(default=0, help_text="Optimizer steps taken.")
    max_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why it failed, for the user.")
    reproducibility = models.JSONField(
        default=dict, blank=True, help_text="Project commit, package versions, host, device."
    )
    cloned_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones"
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker claimed it.")
    notes = models.TextField(blank=True, help_text="The owner's notes; searched on the runs list.")
    tags = models.ManyToManyField(Tag, blank=True, related_name="runs")
    notify_email = models.BooleanField(
        default=False, help_text="Email the owner when the run finishes, fails or is interrupted."
    )
    webhook_url = models.URLField(
        max_length=500, blank=True, help_text="POSTed a JSON message when the run ends."
    )
    archived = models.BooleanField(
        default=False, help_text="Hidden from the runs list by default; kept on disk."
    )
    disk_bytes = models.PositiveBigIntegerField(
        default=0, help_text="Bytes of its media and checkpoints, as last measured."
    )
    health = models.CharField(
        max_length=4, blank=True, help_text="Worst status of its latest health checks."
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="run_owner_recent"),
            models.Index(fields=["status"], name="run_status"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class Event(models.Model):
    """One engine event, numbered per run in the order it was stored."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField(help_text="The run's next sequence number at storage.")
    type = models.CharField(max_length=40)
    step = models.PositiveIntegerField(null=True, blank=True)
    payload = models.JSONField(help_text="event.to_dict(), images replaced by media URLs.")
    time = models.DateTimeField()
    superseded = models.BooleanField(
        default=False, help_text="From steps a resumed run re-ran: kept, never shown twice."
    )

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="event_run_seq")]
        indexes = [models.Index(fields=["run", "type", "step"], name="event_run_type_step")]

    def __str__(self) -> str:
        return f"run {self.run_id} event {self.seq} {self.type}"


class ChartPoint(models.Model):
    """What the run's charts draw of one event (``webapp.runs.metrics.chart_point``), kept
    beside the event so that charts and the run page's current state never read its payload.

    A rollout's payload holds every sample (tens of kB); its point is a few numbers. In SQLite a
    column stored after a large payload is reached only by walking the payload's overflow pages,
    so the point lives in a table of its own, with its own copy of ``superseded``.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chart_points")
    event = models.OneToOneField(Event, on_delete=models.CASCADE, related_name="chart_point")
    series = models.CharField(max_length=20, help_text="reward, train, evaluation or throughput.")
    step = models.PositiveIntegerField()
    values = models.JSONField(help_text="The point's fields, as the metrics API gives them.")
    superseded = models.BooleanField(default=False, help_text="Its event's flag, copied.")

    class Meta:
        indexes = [
            models.Index(
                fields=["run", "series", "superseded", "step"], name="chartpoint_run_series"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.series} point of step {self.step}"


class Sample(models.Model):
    """One image of a prompt group, with its reward and advantage."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField(help_text="Optimizer steps taken before its rollout.")
    rollout_index = models.PositiveIntegerField()
    group_index = models.PositiveIntegerField()
    prompt = models.TextField()
    index_in_group = models.PositiveIntegerField()
    image = models.CharField(max_length=500, help_text="Path under MEDIA_ROOT.")
    thumbnail = models.CharField(max_length=500, help_text="Path under MEDIA_ROOT.")
    reward = models.FloatField()
    components = models.JSONField(default=dict)
    advantage = models.FloatField()
    seed = models.BigIntegerField()
    superseded = models.BooleanField(default=False)

    class Meta:
        ordering = ["run", "step", "group_index", "index_in_group"]
        indexes = [
            models.Index(fields=["run", "step", "group_index"], name="sample_run_step_group"),
            models.Index(fields=["run", "prompt"], name="sample_run_prompt"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.step} group {self.group_index} #{self.index_in_group}"


class Checkpoint(models.Model):
    """A checkpoint the engine wrote."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="checkpoint_run_step")]

    def __str__(self) -> str:
        return f"run {self.run_id} checkpoint {self.step}"


class Notification(models.Model):
    """One message sent (or attempted) about a run ending, by email or webhook."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500, help_text="Address or URL.")
    status = models.CharField(max_length=20, help_text="The run status it announced.")
    delivered = models.BooleanField(default=False)
    detail = models.TextField(blank=True, help_text="The answer, or why it failed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "created_at", "pk"]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.channel} {self.status}"
