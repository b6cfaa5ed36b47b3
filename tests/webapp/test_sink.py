"""The web sink stores events in order with images on disk, and supersedes on resume."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.events import (
    CheckpointSaved,
    RolloutFinished,
    RunEnded,
    RunStarted,
)
from tests.recipes import TINY_COLOR_QUICK
from tests.webapp.engine_events import rollout, train
from tests.webapp.personas import make_run
from webapp.runs.models import Checkpoint, Event, Run
from webapp.runs.models import Sample as SampleRow
from webapp.runs.sink import MediaWriteError, RunSink

pytestmark = pytest.mark.django_db(transaction=True)


def test_events_and_samples_are_stored_in_order(owner: Any, settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner, status=Run.Status.RUNNING)
    sink = RunSink(run)
    events = [
        RunStarted(recipe=run.recipe, layout={}, start_step=0),
        rollout(0, 0),
        train(1),
        CheckpointSaved(step=1, path="/ckpt/1"),
        RunEnded(status="finished", step=1),
    ]
    for event in events:
        sink(event)
    sink.close()

    stored = list(Event.objects.filter(run=run).order_by("seq"))
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert [e.type for e in stored] == [e.type for e in events]
    run.refresh_from_db()
    assert run.step == 1
    assert Checkpoint.objects.get(run=run).path == "/ckpt/1"

    rows = list(SampleRow.objects.filter(run=run).order_by("group_index", "index_in_group"))
    assert [(r.group_index, r.index_in_group, r.seed) for r in rows] == [
        (0, 0, 1000),
        (0, 1, 1001),
        (1, 0, 1002),
        (1, 1, 1003),
    ]
    assert rows[3].reward == 0.75 and rows[3].advantage == 1.0 and rows[3].prompt == "a blue image"
    written = np.asarray(Image.open(tmp_path / rows[2].image))
    assert written.shape == (8, 8, 3) and (written == 80).all()
    assert (tmp_path / rows[2].thumbnail).exists()
    payload = stored[1].payload
    image_url = payload["groups"][1]["samples"][0]["image"]
    assert image_url == f"/media/{rows[2].image}"


def test_resume_supersedes_what_the_checkpoint_does_not_cover(
    owner: Any,
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner, status=Run.Status.RUNNING)
    first = RunSink(run)
    for event in [
        RunStarted(recipe=run.recipe, layout={}),
        rollout(0, 0),
        train(1),
        CheckpointSaved(step=1, path="c1"),
        rollout(1, 1),
        train(2),
        RunEnded(status="interrupted", step=2),
    ]:
        first(event)
    first.close()

    second = RunSink(run)
    second(RunStarted(recipe=run.recipe, layout={}, start_step=1))
    second(_repainted(rollout(1, 1), 200))
    second.close()

    events = list(Event.objects.filter(run=run).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, 10))
    superseded = [(e.type, e.step) for e in events if e.superseded]
    assert superseded == [("rollout_finished", 1), ("train_step_finished", 2)]
    live_rollouts = [e.step for e in events if e.type == "rollout_finished" and not e.superseded]
    assert live_rollouts == [0, 1], "each step shown once"
    samples = SampleRow.objects.filter(run=run)
    assert samples.filter(superseded=True, step=1).count() == 4
    assert samples.filter(superseded=False, step=1).count() == 4
    assert samples.filter(superseded=False, step=0).count() == 4
    assert samples.count() == 12, "nothing recorded is deleted"
    # The resumed step repeats the rollout's index, step and seeds, not its files: each
    # superseded sample still shows its own image (grey 40(2g + i)), the new ones grey 200.
    for sample in samples.filter(step=1):
        pixels = np.asarray(Image.open(tmp_path / sample.image))
        grey = 40 * (2 * sample.group_index + sample.index_in_group)
        assert (pixels == (grey if sample.superseded else 200)).all(), sample.image
    assert len({s.image for s in samples}) == 12


def _repainted(event: RolloutFinished, grey: int) -> RolloutFinished:
    """``event`` with every image a plain ``grey``."""
    groups = tuple(
        replace(g, samples=tuple(replace(s, image=np.full_like(s.image, grey)) for s in g.samples))
        for g in event.groups
    )
    return replace(event, groups=groups)


def test_a_storage_failure_reaches_the_loop(owner: Any, settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker
    run = make_run(owner, status=Run.Status.RUNNING)
    sink = RunSink(run)
    sink(rollout(0, 0))
    with pytest.raises(MediaWriteError, match=f"MEDIA_ROOT={blocker}: Not a directory"):
        sink.close()
    assert not Event.objects.filter(run=run).exists()
    assert not SampleRow.objects.filter(run=run).exists()


def fail_on_save(monkeypatch: pytest.MonkeyPatch, number: int, code: int) -> list[Path]:
    """Make the ``number``-th PNG write fail with ``code`` after writing a partial file."""
    calls: list[Path] = []
    real_save = Image.Image.save

    def save(image: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(Path(fp))
        if len(calls) == number:
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(code, os.strerror(code), str(fp))
        real_save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    return calls


def test_disk_full_fails_the_event_whole_and_keeps_the_record(
    owner: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    run = make_run(owner, status=Run.Status.RUNNING)
    sink = RunSink(run)
    sink(RunStarted(recipe=run.recipe, layout={}))
    sink(rollout(0, 0))
    sink(train(1))
    sink.close()
    # Rollout 1 writes 2 groups x 2 samples x (image + thumbnail): the 5th write hits ENOSPC.
    calls = fail_on_save(monkeypatch, 5, errno.ENOSPC)
    sink = RunSink(run)
    sink(rollout(1, 1))
    with pytest.raises(MediaWriteError) as raised:
        sink.close()
    assert str(raised.value) == (
        f"cannot write media under MEDIA_ROOT={tmp_path / 'media'}: No space left on device"
    )
    assert len(calls) == 5
    # Nothing of the failed rollout: no rows, and none of its 5 files (the partial one included).
    assert not any(path.exists() for path in calls)
    # Its folder is named by its index, step and seq (4: after the first sink's three events).
    folder = tmp_path / "media" / f"runs/{run.pk}/rollout-00001-step-000001-000004"
    assert not list(folder.iterdir())
    rows = SampleRow.objects.filter(run=run)
    assert rows.count() == 4 and set(rows.values_list("step", flat=True)) == {0}
    for row in rows:
        assert (tmp_path / "media" / row.image).is_file()
        assert (tmp_path / "media" / row.thumbnail).is_file()
    # What came before is intact, and the loop's report takes the next number.
    sink = RunSink(run)
    sink(RunEnded(status="failed", step=1, error=str(raised.value)))
    sink.close()
    stored = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert stored == [
        (1, "run_started"),
        (2, "rollout_finished"),
        (3, "train_step_finished"),
        (4, "run_ended"),
    ]


def test_a_run_whose_media_cannot_be_written_fails_with_the_reason(
    owner: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training task end to end, in this process: the run fails, the record stays whole."""
    from engine.overrides import apply_overrides
    from engine.presets import PRESETS
    from webapp.runs.tasks import train_run

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GROUPWISE_RUNS_DIR = tmp_path / "runs"
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, {**TINY_COLOR_QUICK, "max_steps": 3})
    run = Run.objects.create(owner=owner, name="full disk", recipe=recipe.to_dict(), max_steps=3)
    fail_on_save(monkeypatch, 1, errno.EACCES)
    # Listing every installed package's version takes seconds and is not what is tested here.
    monkeypatch.setattr("webapp.runs.queue.reproducibility_record", dict)
    assert train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert "cannot write media under MEDIA_ROOT=" in run.error
    assert run.error.endswith(": Permission denied")
    assert not SampleRow.objects.filter(run=run).exists()
    types = list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
    assert types[0] == "run_started" and types[-1] == "run_ended"
    assert "rollout_finished" not in types
    ended = Event.objects.get(run=run, type="run_ended").payload
    assert ended["status"] == "failed" and "Permission denied" in ended["error"]
    assert list((tmp_path / "media").rglob("*.png")) == []
