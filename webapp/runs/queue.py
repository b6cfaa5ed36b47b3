"""The run queue: claiming a queued run under the per-user limit, and who waits where.

A worker claims a run with one conditional update (queued -> running), so a redelivered message
does nothing. With ``GROUPWISE_MAX_RUNNING_PER_USER`` set, the claim first counts the owner's
running runs inside the same transaction, holding a lock on the owner's row (PostgreSQL) or the
database write lock (SQLite's IMMEDIATE transactions), so two workers claiming two runs of one
user at the same moment cannot both pass the count. A run held back stays queued; its task is
offered again later, and at once when one of the owner's runs ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from webapp.core import heartbeat
from webapp.runs.models import Run
from webapp.runs.reproducibility import reproducibility_record

Claim = Literal["claimed", "not_queued", "held"]
#: Statuses that count against the per-user limit.
RUNNING = (Run.Status.RUNNING, Run.Status.CANCELLING)


def claim_run(run_id: int) -> Claim:
    """Move run ``run_id`` from queued to running for this worker, if the owner's limit allows."""
    record = reproducibility_record()
    with transaction.atomic():
        owner_id = (
            Run.objects.filter(pk=run_id, status=Run.Status.QUEUED)
            .values_list("owner_id", flat=True)
            .first()
        )
        if owner_id is None:
            return "not_queued"
        limit = settings.GROUPWISE_MAX_RUNNING_PER_USER
        if limit:
            # Serialises this owner's claims on PostgreSQL; SQLite already holds the write lock.
            list(get_user_model().objects.select_for_update().filter(pk=owner_id))
            if Run.objects.filter(owner_id=owner_id, status__in=RUNNING).count() >= limit:
                return "held"
        claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
            status=Run.Status.RUNNING,
            started_at=timezone.now(),
            worker=heartbeat.this_worker(),
            attempts=F("attempts") + 1,
            reproducibility=record,
        )
    return "claimed" if claimed else "not_queued"


def next_held_run(owner_id: int) -> int | None:
    """The owner's run that has waited longest in the queue, to offer when a slot frees up."""
    return (
        Run.objects.filter(owner_id=owner_id, status=Run.Status.QUEUED)
        .order_by(F("queued_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)
        .first()
    )


@dataclass(frozen=True)
class QueueEntry:
    """One queued or running run as the queue page shows it."""

    run: Run
    #: 1-based place among queued runs (None for a running one).
    position: int | None
    #: Whether the viewer may see its name and open it.
    visible: bool
    #: Why it is waiting, when the per-user limit holds it.
    waiting_for: str


def queue_entries(viewer: Any) -> list[QueueEntry]:
    """Running runs first (with host and device), then the queue in the order it is served.

    Other users' runs are listed without their names so everyone sees their real position.
    """
    limit = settings.GROUPWISE_MAX_RUNNING_PER_USER
    active = list(
        Run.objects.filter(status__in=(*RUNNING, Run.Status.QUEUED))
        .select_related("owner")
        .order_by(F("queued_at").asc(nulls_first=True), "pk")
    )
    running_per_owner: dict[int, int] = {}
    for run in active:
        if run.status in RUNNING:
            running_per_owner[run.owner_id] = running_per_owner.get(run.owner_id, 0) + 1
    entries = [
        QueueEntry(run, None, _visible(viewer, run), "") for run in active if run.status in RUNNING
    ]
    queued = [run for run in active if run.status == Run.Status.QUEUED]
    for position, run in enumerate(queued, start=1):
        held = bool(limit) and running_per_owner.get(run.owner_id, 0) >= limit
        waiting = f"its owner already runs {limit} run(s), the per-user limit" if held else ""
        entries.append(QueueEntry(run, position, _visible(viewer, run), waiting))
    return entries


def _visible(viewer: Any, run: Run) -> bool:
    return bool(getattr(viewer, "is_staff", False)) or run.owner_id == getattr(viewer, "pk", None)


def on_visible_run_ids(sender: Any, viewer: Any, run_ids: set[int], **kwargs: Any) -> set[int]:
    """Receiver of ``webapp.core.status.visible_run_ids``: which of ``run_ids`` the viewer may
    see (the status panel shows other users' workers busy, not with which run)."""
    if not getattr(viewer, "is_authenticated", False):
        return set()
    return set(Run.objects.visible_to(viewer).filter(pk__in=run_ids).values_list("pk", flat=True))
