"""Disk a run uses, checkpoint retention, and deleting or archiving a run.

A run's files live in two folders: its images under ``MEDIA_ROOT/runs/<id>`` and its checkpoints
under ``GROUPWISE_RUNS_DIR/<id>``. Retention (``GROUPWISE_KEEP_CHECKPOINTS``) runs each time a
checkpoint is recorded; the choice of what to keep is the engine's (``engine.run.retention``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from engine.run.retention import checkpoints_to_keep
from webapp.runs.models import Checkpoint, Event, Run

logger = logging.getLogger(__name__)


class HousekeepingError(Exception):
    """An action the run's state does not allow; the message says why and what to do."""


def run_folders(run_id: int) -> tuple[Path, Path]:
    """The run's media folder and its checkpoint folder."""
    return (
        Path(settings.MEDIA_ROOT) / "runs" / str(run_id),
        Path(settings.GROUPWISE_RUNS_DIR) / str(run_id),
    )


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure_disk(run_id: int) -> int:
    """Store and return the run's current disk use."""
    used = sum(folder_bytes(folder) for folder in run_folders(run_id))
    Run.objects.filter(pk=run_id).update(disk_bytes=used)
    return used


def total_disk_bytes() -> int:
    """Disk used by every run, as last measured."""
    return Run.objects.aggregate(total=Sum("disk_bytes"))["total"] or 0


def apply_retention(run_id: int) -> list[int]:
    """Delete the run's checkpoints retention does not keep; the steps deleted."""
    keep_last = settings.GROUPWISE_KEEP_CHECKPOINTS
    checkpoints = list(Checkpoint.objects.filter(run_id=run_id))
    rewards = {
        event.step: float(event.payload["reward_mean"])
        for event in Event.objects.filter(
            run_id=run_id, type="evaluation_finished", superseded=False
        )
        if event.step is not None
    }
    keep = checkpoints_to_keep([c.step for c in checkpoints], rewards, keep_last)
    deleted = []
    root = run_folders(run_id)[1].resolve()
    for checkpoint in checkpoints:
        if checkpoint.step in keep:
            continue
        folder = Path(checkpoint.path).resolve()
        # Only ever delete inside the run's own checkpoint folder, whatever a row says.
        if folder.is_relative_to(root) and folder != root:
            shutil.rmtree(folder, ignore_errors=True)
        checkpoint.delete()
        deleted.append(checkpoint.step)
    measure_disk(run_id)
    return deleted


def delete_run(run: Run) -> None:
    """Delete a run that is not active: its rows, images and checkpoints."""
    if run.is_active:
        raise HousekeepingError(f"run #{run.pk} is {run.status}: cancel it before deleting it")
    folders = run_folders(run.pk)
    with transaction.atomic():
        # Conditional, so a run resumed a moment ago is not deleted under its worker.
        deleted, _ = Run.objects.filter(pk=run.pk).exclude(status__in=Run.ACTIVE).delete()
    if not deleted:
        raise HousekeepingError(f"run #{run.pk} became active: cancel it before deleting it")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            logger.warning("run %s deleted but %s could not be removed", run.pk, folder)


def set_archived(run: Run, archived: bool) -> Run:
    """Archive (hide from the runs list, keep everything) or restore a run that is not active."""
    if archived and run.is_active:
        raise HousekeepingError(f"run #{run.pk} is {run.status}: archive it once it has ended")
    Run.objects.filter(pk=run.pk).update(archived=archived)
    run.refresh_from_db()
    return run
