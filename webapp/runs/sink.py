"""The web sink: stores every engine event (rows, images under media) first, then notifies.

The training loop calls the sink from its own thread; the sink hands each event to one writer
thread, so PNG encoding and database writes never slow training, and events are stored in the
order they were emitted. Each stored event gets the run's next sequence number. Only after its
rows are committed is the browser told (Redis group push when ``REDIS_URL`` is set; otherwise
live pages follow the event table). A failure to store is raised to the loop at its next event or
at ``close()``: a run whose record is broken must stop, not train on unrecorded.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Max
from PIL import Image

from engine.events import (
    CheckpointSaved,
    EvaluationFinished,
    Event,
    Health,
    PromptGroup,
    RolloutFinished,
    RunStarted,
    Sample,
    TrainStepFinished,
)
from webapp.runs import housekeeping, models
from webapp.runs.metrics import SERIES, chart_point

logger = logging.getLogger(__name__)


class MediaWriteError(OSError):
    """An image could not be written under MEDIA_ROOT; the message names the folder and why."""


THUMBNAIL_PIXELS = 160
#: Events whose records a resume re-creates, and so supersedes.
STEP_EVENTS = (
    "rollout_finished",
    "train_step_finished",
    "evaluation_finished",
    "throughput",
    "health",
    "checkpoint_saved",
)


#: The run fields a socket message carries.
RUN_STATE = ("status", "step", "max_steps", "error")


def worst_status(event: Health) -> str:
    """fail over warn over pass: what the runs list flags."""
    statuses = {check.status for check in event.checks}
    return next((s for s in ("fail", "warn") if s in statuses), "pass")


def run_group(run_id: int) -> str:
    """The channel-layer group that hears about a run's new events."""
    return f"run-{run_id}"


class RunSink:
    """Callable sink for one run: ``sink(event)``; ``close()`` waits for the writer."""

    def __init__(self, run: models.Run) -> None:
        self.run_id = run.pk
        last = run.events.aggregate(last=Max("seq"))["last"]
        self._next_seq = (last or 0) + 1
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"run-{run.pk}-sink")
        self._pending: list[Future[None]] = []

    def __call__(self, event: Event) -> None:
        self._raise_failures()
        self._pending.append(self._writer.submit(self._store_safely, event))

    def close(self) -> None:
        """Wait until every event is stored; raise the first storage failure."""
        self._writer.shutdown(wait=True)
        self._raise_failures()

    def _raise_failures(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def _store_safely(self, event: Event) -> None:
        try:
            record, run = self._store(event)
        finally:
            close_old_connections()
        self._notify(record, run)
        if isinstance(event, CheckpointSaved):
            housekeeping.apply_retention(self.run_id)

    def _store(self, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
        record, run = store_event(self.run_id, self._next_seq, event)
        self._next_seq += 1
        return record, run

    def _notify(self, record: dict[str, Any], run: dict[str, Any]) -> None:
        if not settings.REDIS_URL:
            return
        try:
            layer = get_channel_layer()
            # The stored event rides along, so a socket that is up to date sends it on without
            # reading it back; one that missed something reads the gap from the database.
            async_to_sync(layer.group_send)(
                run_group(self.run_id),
                {"type": "run.event", "seq": record["seq"], "events": [record], "run": run},
            )
        except Exception:
            # The database is the record: a browser that missed the push catches up from it.
            logger.warning(
                "could not notify run %s listeners of event %s", self.run_id, record["seq"]
            )


def store_event(run_id: int, seq: int, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """Store ``event`` as run ``run_id``'s event ``seq`` (rows, and images under MEDIA_ROOT) in
    one transaction; return it as sockets send it, and the run's state after it.

    The live sink and ``manage.py import_run`` both store through here, so an imported run is
    recorded exactly as a web run is. An image that cannot be written raises
    ``MediaWriteError``: the event is stored whole or not at all, and the files it had written
    are removed.
    """
    payload = event.to_dict(encode_image=lambda _image: None)
    written: list[Path] = []
    try:
        return _store_rows(run_id, seq, event, payload, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _store_rows(
    run_id: int, seq: int, event: Event, payload: dict[str, Any], written: list[Path]
) -> tuple[dict[str, Any], dict[str, Any]]:
    with transaction.atomic():
        if isinstance(event, RunStarted):
            _supersede_after(run_id, event.start_step)
        if isinstance(event, RolloutFinished):
            _store_rollout(run_id, seq, event, payload, written)
        elif isinstance(event, EvaluationFinished):
            _store_evaluation(run_id, seq, event, payload, written)
        elif isinstance(event, TrainStepFinished):
            models.Run.objects.filter(pk=run_id).update(step=event.step)
        elif isinstance(event, Health):
            models.Run.objects.filter(pk=run_id).update(health=worst_status(event))
        elif isinstance(event, CheckpointSaved):
            models.Checkpoint.objects.update_or_create(
                run_id=run_id, step=event.step, defaults={"path": event.path}
            )
        record = models.Event.objects.create(
            run_id=run_id,
            seq=seq,
            type=event.type,
            step=payload.get("step"),
            payload=payload,
            time=datetime.fromtimestamp(event.time, tz=UTC),
        )
        point = chart_row(record)
        if point is not None:
            point.save()
        run = dict(models.Run.objects.values(*RUN_STATE).get(pk=run_id))
    return {"seq": seq, "type": event.type, "step": payload.get("step"), "payload": payload}, run


def _supersede_after(run_id: int, start_step: int) -> None:
    """A resume from ``start_step`` re-runs what was recorded after that checkpoint."""
    after_seq = 0
    if start_step > 0:
        checkpoint = (
            models.Event.objects.filter(
                run_id=run_id, type="checkpoint_saved", step=start_step, superseded=False
            )
            .order_by("-seq")
            .first()
        )
        after_seq = checkpoint.seq if checkpoint else 0
    models.Event.objects.filter(
        run_id=run_id, type__in=STEP_EVENTS, seq__gt=after_seq, superseded=False
    ).update(superseded=True)
    models.ChartPoint.objects.filter(
        run_id=run_id, event__seq__gt=after_seq, superseded=False
    ).update(superseded=True)
    models.Sample.objects.filter(run_id=run_id, step__gte=start_step, superseded=False).update(
        superseded=True
    )


def _store_rollout(
    run_id: int, seq: int, event: RolloutFinished, payload: dict[str, Any], written: list[Path]
) -> None:
    rows = []
    # The event's seq in the name: a resumed step repeats the rollout's index, step and seeds,
    # and must not overwrite the images its superseded records still point to.
    folder = f"runs/{run_id}/rollout-{event.rollout_index:05d}-step-{event.step:06d}-{seq:06d}"
    for group, group_data in zip(event.groups, payload["groups"], strict=True):
        for sample, sample_data in zip(group.samples, group_data["samples"], strict=True):
            stem = f"{folder}/g{group.group_index:03d}-s{sample.sample_index:03d}-{sample.seed}"
            image, thumbnail = _write_image(sample.image, stem, written)
            sample_data["image"] = settings.MEDIA_URL + image
            sample_data["thumbnail"] = settings.MEDIA_URL + thumbnail
            rows.append(sample_row(run_id, event, group, sample, image, thumbnail))
    models.Sample.objects.bulk_create(rows)


def sample_row(
    run_id: int,
    event: RolloutFinished,
    group: PromptGroup,
    sample: Sample,
    image: str,
    thumbnail: str,
) -> models.Sample:
    """The (unsaved) row of one rollout sample whose files are ``image`` and ``thumbnail``
    (paths under MEDIA_ROOT)."""
    return models.Sample(
        run_id=run_id,
        step=event.step,
        rollout_index=event.rollout_index,
        group_index=group.group_index,
        prompt=group.prompt,
        index_in_group=sample.sample_index,
        image=image,
        thumbnail=thumbnail,
        reward=sample.reward,
        components=sample.reward_components,
        advantage=sample.advantage,
        seed=sample.seed,
    )


def chart_row(record: models.Event) -> models.ChartPoint | None:
    """The (unsaved) chart point of a stored event, None for an event no chart draws."""
    point = chart_point(record.type, record.payload)
    if point is None:
        return None
    return models.ChartPoint(
        run_id=record.run_id,
        event=record,
        series=SERIES[record.type],
        step=record.payload["step"],
        values=point,
        superseded=record.superseded,
    )


def _store_evaluation(
    run_id: int, seq: int, event: EvaluationFinished, payload: dict[str, Any], written: list[Path]
) -> None:
    # The seq keeps a resumed step's evaluation from overwriting a superseded one's images.
    folder = f"runs/{run_id}/eval-step-{event.step:06d}-{seq:06d}"
    for index, (sample, data) in enumerate(zip(event.samples, payload["samples"], strict=True)):
        image, thumbnail = _write_image(
            sample.image, f"{folder}/{index:03d}-{sample.seed}", written
        )
        data["image"] = settings.MEDIA_URL + image
        data["thumbnail"] = settings.MEDIA_URL + thumbnail


def _write_image(pixels: np.ndarray, stem: str, written: list[Path]) -> tuple[str, str]:
    """Write ``stem``.png and its thumbnail; return both paths relative to MEDIA_ROOT.

    Each new file is listed in ``written`` before it is written (a failed write can leave a part).
    Raises ``MediaWriteError`` naming MEDIA_ROOT and the system's reason (ENOSPC, EACCES, a file
    where a folder should be) when either cannot be written.
    """
    root = Path(settings.MEDIA_ROOT)
    image_path, thumb_path = f"{stem}.png", f"{stem}.thumb.png"
    picture = Image.fromarray(pixels)
    try:
        (root / image_path).parent.mkdir(parents=True, exist_ok=True)
        _save(picture, root / image_path, written)
        picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        _save(picture, root / thumb_path, written)
    except OSError as error:
        reason = error.strerror or str(error)
        raise MediaWriteError(f"cannot write media under MEDIA_ROOT={root}: {reason}") from error
    return image_path, thumb_path


def _save(picture: Image.Image, path: Path, written: list[Path]) -> None:
    # A file that exists already (a resumed run re-writing a step) belongs to older rows and is
    # never removed.
    if not path.exists():
        written.append(path)
    picture.save(path, optimize=False)
