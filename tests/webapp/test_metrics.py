"""Metric series from chart points: stored beside each event, downsampled exactly, zoomable,
and backfilled by the migration for events stored before points existed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from engine.events import CheckpointSaved, RunStarted
from tests.webapp.engine_events import evaluation, rollout, store, throughput, train
from tests.webapp.personas import client_for, make_run
from webapp.runs.metrics import MAX_POINTS, chart_point, downsample, run_metrics
from webapp.runs.models import ChartPoint, Run

pytestmark = pytest.mark.django_db


def reward_points(groups_per_step: list[list[float]]) -> list[dict[str, Any]]:
    """A reward series: one point per step, of those samples' rewards (one group each)."""
    return [
        chart_point("rollout_finished", rollout(step, step, (rewards,)).to_dict())
        for step, rewards in enumerate(groups_per_step)
    ]  # type: ignore[misc]


def test_a_downsampled_reward_point_is_exact_over_its_samples() -> None:
    rng = np.random.default_rng(0)
    # 10 rollouts of uneven sizes, into 3 points: steps 0-2, 3-5, 6-9.
    rewards = [list(rng.random(int(rng.integers(1, 6)))) for _ in range(10)]
    merged = downsample("reward", reward_points(rewards), 3)
    assert [(p["first_step"], p["step"], p["span"]) for p in merged] == [
        (0, 2, 3),
        (3, 5, 3),
        (6, 9, 4),
    ]
    for point in merged:
        values = np.concatenate(rewards[point["first_step"] : point["step"] + 1])
        assert point["count"] == len(values)
        assert point["mean"] == pytest.approx(values.mean())
        assert point["std"] == pytest.approx(values.std())  # population std, as numpy's default
        assert point["components"]["color"] == pytest.approx(values.mean())


def test_a_flat_bucket_has_zero_std_not_a_rounding_error() -> None:
    merged = downsample("reward", reward_points([[0.1] * 3] * 6), 2)
    assert [p["std"] for p in merged] == [0.0, 0.0]


def test_other_series_merge_means_and_keep_extremes() -> None:
    points = [
        chart_point(
            "train_step_finished", train(step, loss=step, ratio=(1 - step, 1 + step)).to_dict()
        )
        for step in range(1, 7)
    ]
    first, second = downsample("train", points, 2)  # type: ignore[arg-type]
    assert (first["first_step"], first["step"], first["span"]) == (1, 3, 3)
    assert first["loss"] == pytest.approx(2.0) and second["loss"] == pytest.approx(5.0)
    assert (first["ratio_min"], first["ratio_max"]) == (-2, 4)
    assert (second["ratio_min"], second["ratio_max"]) == (-5, 7)
    assert second["time"] == points[-1]["time"]  # type: ignore[index]


def test_a_short_series_is_given_as_it_is() -> None:
    points = reward_points([[0.5], [0.7]])
    assert downsample("reward", points, 2) is points


def test_an_empty_rollout_has_no_mean_and_merges_as_nothing() -> None:
    empty = chart_point("rollout_finished", rollout(0, 0, ((),)).to_dict())
    assert empty is not None and (empty["mean"], empty["std"], empty["count"]) == (None, None, 0)
    merged = downsample("reward", [empty, *reward_points([[0.2]])[:1]], 1)
    assert (merged[0]["mean"], merged[0]["count"]) == (0.2, 1)


def test_the_api_downsamples_zooms_and_skips_superseded(
    owner: Any, other: Any, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner)
    events: list[object] = []
    for step in range(12):
        events += [rollout(step, step, ((step / 10,),)), train(step + 1, loss=step)]
        events += [throughput(step, 1.0 + step)]
        if step == 5:
            events.append(CheckpointSaved(step=6, path="c6"))
    events += [evaluation(4, 0.4), evaluation(8, 0.8)]
    store(run.pk, *events)
    client = client_for(owner)
    url = f"/api/runs/{run.pk}/metrics/"

    full = client.get(url).json()
    assert [p["step"] for p in full["reward"]] == list(range(12))
    assert full["steps"] == [0, 12] and full["downsampled"] is False

    small = client.get(url + "?points=4").json()
    assert small["downsampled"] is True
    assert [(p["first_step"], p["step"]) for p in small["reward"]] == [
        (0, 2),
        (3, 5),
        (6, 8),
        (9, 11),
    ]
    assert [p["mean"] for p in small["reward"]] == pytest.approx([0.1, 0.4, 0.7, 1.0])
    assert len(small["train"]) == 4 and len(small["throughput"]) == 4
    assert small["evaluation"] == full["evaluation"], "two points: nothing to merge"

    zoomed = client.get(url + "?points=4&from=5&to=7").json()
    assert [p["step"] for p in zoomed["reward"]] == [5, 6, 7], "full resolution when it fits"
    assert zoomed["steps"] == [0, 12], "the whole run's range, to zoom back out"

    for bad in ("points=0", f"points={MAX_POINTS + 1}", "points=x", "from=1e3"):
        answer = client.get(f"{url}?{bad}")
        assert answer.status_code == 400, bad
    assert client_for(other).get(url).status_code == 404

    # A resume from the checkpoint of step 6 supersedes every point stored after it.
    store(run.pk, RunStarted(recipe=run.recipe, layout={}, start_step=6), rollout(6, 6, ((0.9,),)))
    resumed = client.get(url).json()
    assert [(p["step"], p["mean"]) for p in resumed["reward"]] == [
        *[(s, pytest.approx(s / 10)) for s in range(6)],
        (6, 0.9),
    ]
    assert [p["step"] for p in resumed["train"]] == list(range(1, 7))
    assert resumed["evaluation"] == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_points_of_events_stored_before(owner: Any) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("runs", "0006_sweep_to_sweeps")])
    old = executor.loader.project_state([("runs", "0006_sweep_to_sweeps")]).apps
    run = old.get_model("runs", "Run").objects.create(
        owner_id=owner.pk, name="before", recipe={}, max_steps=2
    )
    Event = old.get_model("runs", "Event")
    payloads = [
        rollout(0, 0, ((0.2, 0.4),)).to_dict(encode_image=lambda _: None),
        train(1, loss=0.5).to_dict(),
        {"type": "log_line", "level": "info", "message": "hi", "time": 1.0},
    ]
    for seq, payload in enumerate(payloads, 1):
        Event.objects.create(
            run=run, seq=seq, type=payload["type"], step=payload.get("step"), payload=payload,
            time=timezone.now(), superseded=seq == 2,
        )  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    points = {p.series: p for p in ChartPoint.objects.filter(run_id=run.pk)}
    assert set(points) == {"reward", "train"}, "a log line is not charted"
    assert points["reward"].values["mean"] == pytest.approx(0.3)
    assert points["reward"].values["std"] == pytest.approx(0.1)
    assert (points["train"].superseded, points["reward"].superseded) == (True, False)
    assert run_metrics(Run.objects.get(pk=run.pk))["train"] == [], "superseded stays superseded"
