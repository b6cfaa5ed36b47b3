"""`runs.train_run` with num_gpus=2 in a real worker: two gloo rank subprocesses on CPU, rank 0's
events stored once through the task's sink.

One test only: the worker and two ranks each import torch and the engine (tens of seconds on a
loaded machine). Cancellation and rank failures are covered by
tests/engine/run/test_distributed_loop.py through the same ``engine.run.ranks.train`` the task
calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.webapp.test_train_task import queued_run, worker_setup  # noqa: F401 (a fixture)
from webapp.runs.models import Checkpoint, Event, Sample

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_two_rank_run_trains_through_the_task_with_its_events_once(
    owner: Any,
    worker_setup: Any,  # noqa: F811
) -> None:
    app, worker, tmp_path = worker_setup
    run = queued_run(owner, num_gpus=2)
    result = app.send_task("runs.train_run", args=[run.pk], queue="gpu")
    assert result.get(timeout=600) == "finished", worker.log()

    run.refresh_from_db()
    assert (run.status, run.step, run.error) == ("finished", 2, "")
    stored = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    seqs, types = zip(*stored, strict=True)
    assert list(seqs) == list(range(1, len(stored) + 1))
    # Two rollouts of one optimizer step each; one copy of every event although two ranks ran.
    assert types == (
        "run_started",
        "rollout_finished",
        "train_step_finished",
        "health",
        "throughput",
        "rollout_finished",
        "train_step_finished",
        "health",
        "evaluation_finished",
        "throughput",
        "checkpoint_saved",
        "run_ended",
    )
    assert (
        Event.objects.get(run=run, type="run_started").payload["recipe"]["layout"]["num_gpus"] == 2
    )
    assert Sample.objects.filter(run=run).count() == 2 * 2 * 4  # 2 rollouts x P=2 x G=4
    checkpoint = Checkpoint.objects.get(run=run)
    assert checkpoint.step == 2 and Path(checkpoint.path).is_dir()
    logs = tmp_path / "runs" / str(run.pk) / "logs"
    for rank in (0, 1):
        assert "run finished after step 2" in (logs / f"rank-{rank}.log").read_text()
