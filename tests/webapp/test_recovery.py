"""Runs of dead workers: found through heartbeats, interrupted, resumed without losing a record."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
from webapp.core.heartbeat import pid_namespace
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


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _beat_from(
    run: Run, host: str, pid: int, after_claim: float = 0.5, namespace: str | None = None
) -> WorkerHeartbeat:
    """A fresh heartbeat of worker ``groupwise-8311@host`` (``pid``, in this process's pid
    namespace unless told) running ``run``, last written ``after_claim`` s after its claim."""
    assert run.started_at is not None
    return WorkerHeartbeat.objects.create(
        name=f"groupwise-8311@{host}", host=host, pid=pid, queues=["gpu"],
        pid_namespace=pid_namespace() if namespace is None else namespace,
        current_run_id=run.pk, started_at=run.started_at,
        last_seen=run.started_at + timedelta(seconds=after_claim),
    )  # fmt: skip


@pytest.mark.django_db
def test_a_worker_whose_process_is_gone_is_not_waited_for(owner: Any) -> None:
    here = socket.gethostname()
    # All three were claimed a second ago and beat since: well inside the 30 s live window.
    gone = _running(owner, 1)
    _beat_from(gone, here, _dead_pid())
    alive_here = _running(owner, 1)
    _beat_from(alive_here, here, os.getpid())
    elsewhere = _running(owner, 1)
    # That host's pids are not this host's to look up: only the window applies there; nor are
    # those of another pid namespace under this host's name (a container on host networking).
    _beat_from(elsewhere, "another-host", _dead_pid())
    other_namespace = _running(owner, 1)
    _beat_from(other_namespace, here, _dead_pid(), namespace="pid:[1]")
    assert interrupt_orphaned_runs() == [gone.pk]
    gone.refresh_from_db()
    dead = WorkerHeartbeat.objects.get(current_run_id=gone.pk)
    assert gone.status == "interrupted"
    assert gone.error == (
        f"worker groupwise-8311@{here} (pid {dead.pid}) is gone: resume to continue from the "
        "last checkpoint"
    )
    for run in (alive_here, elsewhere, other_namespace):
        run.refresh_from_db()
        assert run.status == "running"


@pytest.mark.django_db
def test_a_run_claimed_again_after_its_worker_died_waits_for_the_new_worker(owner: Any) -> None:
    # The dead process last beat before the run's current claim (a resume another worker took
    # and has not beaten for yet): the new claim gets the usual window.
    run = _running(owner, 1)
    _beat_from(run, socket.gethostname(), _dead_pid(), after_claim=-5)
    assert interrupt_orphaned_runs() == []
    run.refresh_from_db()
    assert run.status == "running"


@pytest.mark.django_db
def test_the_error_names_the_worker_the_run_recorded(owner: Any) -> None:
    run = _running(owner, 120)
    Run.objects.filter(pk=run.pk).update(worker="groupwise-8311@gpu-host-1")
    assert interrupt_orphaned_runs() == [run.pk]
    run.refresh_from_db()
    assert run.error.startswith("worker groupwise-8311@gpu-host-1 stopped sending heartbeats")


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
    # A live window no test waits out: the second worker, on this host, sees that the first
    # one's process is gone and does not wait for its heartbeat to age.
    settings.WORKER_LIVE_SECONDS = 3600
    b = broker("embedded", tmp_path)
    app = client_app(b)
    env = {
        "MEDIA_ROOT": str(tmp_path / "media"),
        "GROUPWISE_RUNS_DIR": str(tmp_path / "runs"),
        "WORKER_LIVE_SECONDS": "3600",
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
        assert Run.objects.get(pk=run.pk).worker == first.name
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
        assert Run.objects.get(pk=run.pk).error.startswith(
            f"worker {first.name} (pid {first.process.pid}) is gone"
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
