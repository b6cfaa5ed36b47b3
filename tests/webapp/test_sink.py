"""The web sink stores events in order with images on disk, and supersedes on resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.events import (
    CheckpointSaved,
    PromptGroup,
    RolloutFinished,
    RunEnded,
    RunStarted,
    Sample,
    TrainStepFinished,
)
from tests.webapp.personas import make_run
from webapp.runs.models import Checkpoint, Event, Run
from webapp.runs.models import Sample as SampleRow
from webapp.runs.sink import RunSink

pytestmark = pytest.mark.django_db(transaction=True)


def rollout(step: int, rollout_index: int) -> RolloutFinished:
    groups = []
    for g, prompt in enumerate(["a red image", "a blue image"]):
        samples = []
        for i in range(2):
            pixels = np.full((8, 8, 3), 40 * (g * 2 + i), dtype=np.uint8)
            samples.append(
                Sample(
                    sample_index=i,
                    seed=1000 + g * 2 + i,
                    image=pixels,
                    reward=0.25 * (g * 2 + i),
                    reward_components={"color": 0.25 * (g * 2 + i)},
                    advantage=float(i * 2 - 1),
                )
            )
        groups.append(PromptGroup(group_index=g, prompt=prompt, samples=tuple(samples)))
    return RolloutFinished(
        step=step,
        rollout_index=rollout_index,
        rollout_seed=7,
        sde_window=(0, 1),
        groups=tuple(groups),
    )


def train(step: int) -> TrainStepFinished:
    return TrainStepFinished(
        step=step,
        rollout_index=step - 1,
        loss=0.1,
        policy_loss=0.1,
        kl=0.0,
        clip_fraction=0.0,
        ratio_mean=1.0,
        ratio_min=1.0,
        ratio_max=1.0,
        grad_norm=0.5,
        lr=1e-3,
    )


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
    second(rollout(1, 1))
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


def test_a_storage_failure_reaches_the_loop(owner: Any, settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker
    run = make_run(owner, status=Run.Status.RUNNING)
    sink = RunSink(run)
    sink(rollout(0, 0))
    with pytest.raises(OSError):
        sink.close()
    assert not Event.objects.filter(run=run).exists()
