"""Runs of dead workers: found through heartbeats, interrupted, resumed without losing a record."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from engine.overrides import apply_overrides
from engine.presets import PRESETS
from tests.recipes import TINY_COLOR_SMALL
from tests.waiting import wait_until
from tests.webapp.personas import make_run
from tests.webapp.workers import broker, client_app, start_worker
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Event, Run
from webapp.runs.recovery import interrupt_orphaned_runs


def _running(owner: Any, started_seconds_ago: float) -> Run:
    run = make_run(owner, status=Run.Status.RUNNING)
    run.started_at = timezone.now() - timedelta(seconds=started_seconds_ago)
    run.worker = "gpu-host-1"
    run.save()
    return run


def _beat(run: Run | None, age: float) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        name=f"w{time.monotonic_ns()}@h", host="h", pid=1, queues=["gpu"],
        current_run_id=run.pk if run else None, started_at=now,
        last_seen=now - timedelta(seconds=age),
    )  # fmt: skip


@pytest.mark.django_db
def test_only_runs_without_a_live_worker_are_interrupted(owner: Any) -> None:
    watched = _running(owner, 120)
    _beat(watched, age=2)
    orphan = _running(owner, 120)
    stale = _running(owner, 120)
    _beat(stale, age=45)
    just_claimed = _running(owner, 1)
    assert sorted(interrupt_orphaned_runs()) == sorted([orphan.pk, stale.pk])
    for run, status in ((watched, "running"), (orphan, "interrupted"), (stale, "interrupted"),
                        (just_claimed, "running")):  # fmt: skip
        run.refresh_from_db()
        assert run.status == status
    orphan.refresh_from_db()
    assert "stopped sending heartbeats" in orphan.error and orphan.finished_at is not None


@pytest.mark.django_db
def test_auto_resume_queues_the_run_again(
    owner: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.GROUPWISE_AUTO_RESUME = True
    orphan = _running(owner, 120)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert interrupt_orphaned_runs() == [orphan.pk]
    orphan.refresh_from_db()
    assert orphan.status == "queued" and len(callbacks) == 1


@pytest.mark.django_db
def test_the_health_report_notices_dead_workers(owner: Any, client: Client) -> None:
    orphan = _running(owner, 120)
    client.get("/healthz")
    orphan.refresh_from_db()
    assert orphan.status == "interrupted"


@pytest.mark.django_db(transaction=True)
def test_kill_9_mid_run_then_a_new_worker_and_resume(
    owner: Any, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    settings.WORKER_LIVE_SECONDS = 3
    b = broker("embedded", tmp_path)
    app = client_app(b)
    env = {
        "MEDIA_ROOT": str(tmp_path / "media"),
        "GROUPWISE_RUNS_DIR": str(tmp_path / "runs"),
        "WORKER_LIVE_SECONDS": "3",
    }
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {**TINY_COLOR_SMALL, "max_steps": 6, "checkpoint_every": 2, "eval_every": 6},
    )
    run = Run.objects.create(
        owner=owner, name="killed", recipe=recipe.to_dict(), max_steps=6, preset="tiny-color"
    )

    with start_worker(b, tmp_path, extra_env=env) as first:
        first.wait_ready()
        app.send_task("runs.train_run", args=[run.pk], queue="gpu")
        wait_until(
            lambda: Event.objects.filter(run=run, type="checkpoint_saved").exists(),
            300,
            what="a first checkpoint",
            context=first.log,
        )
        first.stop(signal.SIGKILL)
    before = Event.objects.filter(run=run).count()
    last_checkpoint = Event.objects.filter(run=run, type="checkpoint_saved").latest("seq").step

    with start_worker(b, tmp_path, extra_env=env) as second:
        second.wait_ready()
        wait_until(
            lambda: Run.objects.get(pk=run.pk).status == "interrupted",
            300,
            what="the new worker to notice",
            context=second.log,
        )
        Run.objects.filter(pk=run.pk).update(status=Run.Status.QUEUED)
        result = app.send_task("runs.train_run", args=[run.pk], queue="gpu")
        assert result.get(timeout=300) == "finished", second.log()

    run.refresh_from_db()
    assert (run.status, run.step, run.attempts) == ("finished", 6, 2)
    events = Event.objects.filter(run=run)
    assert events.count() > before, "nothing recorded before the kill was deleted"
    restarts = [e.payload["start_step"] for e in events.filter(type="run_started")]
    assert restarts == [0, last_checkpoint]
    steps = list(
        events.filter(type="train_step_finished", superseded=False).values_list("step", flat=True)
    )
    assert sorted(steps) == [1, 2, 3, 4, 5, 6], "every step shown exactly once"
