"""Bring a headless run (``python -m engine train --out DIR``) into the dashboard.

Every event of ``DIR/events.jsonl`` is stored through the web sink's own ``store_event`` under
its sequence number, so the imported run has the same rows, media files and superseded marks
as if it had trained here. Checkpoints are copied into the run's folder (where a resume looks
for them) unless the caller keeps them in place. The whole file is checked before anything is
stored, and a failure part-way leaves nothing behind: no rows, no media, no copies.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from engine.events import CheckpointSaved
from engine.run.folder import RunFolderError, read_events, scan
from webapp.runs.models import Run
from webapp.runs.sink import store_event
from webapp.runs.tasks import run_dir

#: The reproducibility record's key that names the folder a run was imported from.
IMPORTED_FROM = "imported_from"


class AlreadyImported(RunFolderError):
    """The folder was imported before; the message names the run."""


def import_run(folder: Path, owner: Any, *, name: str = "", copy_checkpoints: bool = True) -> Run:
    """Import ``folder`` as a new run of ``owner``; returns it.

    Raises ``RunFolderError`` (naming the file and line) for a folder that is not a readable
    run, and ``AlreadyImported`` when a run was imported from the same folder.
    """
    folder = Path(folder).resolve()
    summary = scan(folder)
    earlier = Run.objects.filter(**{f"reproducibility__{IMPORTED_FROM}": str(folder)}).first()
    if earlier is not None:
        raise AlreadyImported(
            f"{folder} was already imported as run #{earlier.pk} ({earlier.name}): "
            "delete that run first to import it again"
        )
    run: Run | None = None
    try:
        with transaction.atomic():
            run = Run.objects.create(
                owner=owner,
                name=name or folder.name,
                recipe=summary.recipe,
                status=summary.status,
                error=summary.error,
                max_steps=int(summary.recipe.get("run", {}).get("max_steps", 0)),
                started_at=_when(summary.started),
                finished_at=_when(summary.ended),
                reproducibility={IMPORTED_FROM: str(folder)},
            )
            moved = _copy_checkpoints(folder, run_dir(run.pk)) if copy_checkpoints else {}
            for seq, event in read_events(folder):
                if isinstance(event, CheckpointSaved) and Path(event.path).name in moved:
                    event = dataclasses.replace(event, path=moved[Path(event.path).name])
                store_event(run.pk, seq, event)
    except BaseException:
        # Ctrl-C included: the rows are rolled back, the files written so far go too.
        if run is not None:
            shutil.rmtree(Path(settings.MEDIA_ROOT) / "runs" / str(run.pk), ignore_errors=True)
            shutil.rmtree(run_dir(run.pk), ignore_errors=True)
        raise
    run.refresh_from_db()
    return run


def _copy_checkpoints(folder: Path, out_dir: Path) -> dict[str, str]:
    """Copy ``folder/checkpoints`` (with its ``latest`` pointer, without unfinished saves) to
    ``out_dir/checkpoints``; the new path of each checkpoint folder by its name."""
    source, target = folder / "checkpoints", out_dir / "checkpoints"
    if not source.is_dir():
        return {}
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"))
    return {path.name: str(path) for path in target.iterdir() if path.is_dir()}


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)
