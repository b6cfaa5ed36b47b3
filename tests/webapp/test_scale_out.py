"""Scale-out: two worker processes on Redis take two runs at once, and each run is claimed once.

Both runs' tasks are sent twice to two solo workers on the ``gpu`` queue: the two runs train
side by side on different workers, and the duplicates find their run taken and do nothing (the
claim is a conditional update, queued -> running).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.overrides import apply_overrides
from engine.presets import PRESETS
from tests.conftest import require_service
from tests.recipes import TINY_COLOR_QUICK
from tests.waiting import wait_until
from tests.webapp.workers import REDIS_BROKER, broker, client_app, start_worker
from webapp.runs.models import Event, Run

pytestmark = [pytest.mark.production, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _explicit_brokers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery prefers these over the broker the client app is built with (see test_worker.py).
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)


def queued(owner: Any, name: str) -> Run:
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, TINY_COLOR_QUICK)
    return Run.objects.create(
        owner=owner, name=name, recipe=recipe.to_dict(), max_steps=recipe.run.max_steps
    )


def test_two_workers_take_two_runs_at_once_each_claimed_once(
    owner: Any, tmp_path: Path, settings: Any
) -> None:
    require_service("Redis", REDIS_BROKER)
    redis.Redis.from_url(REDIS_BROKER).flushdb()
    b = broker("redis", tmp_path)
    app = client_app(b)
    env = {"MEDIA_ROOT": str(tmp_path / "media"), "GROUPWISE_RUNS_DIR": str(tmp_path / "runs")}
    first, second = queued(owner, "first"), queued(owner, "second")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    with (
        start_worker(b, tmp_path / "a", queues="gpu", extra_env=env) as worker_a,
        start_worker(b, tmp_path / "b", queues="gpu", extra_env=env) as worker_b,
    ):
        worker_a.wait_ready()
        worker_b.wait_ready()
        # The first run's task goes out alone; once a worker has claimed it, that worker is
        # busy (a solo worker takes nothing new while a task runs), so the second run's task
        # must go to the other, idle worker. Both duplicates follow and wait their turn.
        messages = [app.send_task("runs.train_run", args=[first.pk], queue="gpu")]
        wait_until(
            lambda: Run.objects.filter(pk=first.pk, status=Run.Status.RUNNING).exists(),
            300,
            what="a worker to claim the first run",
            context=lambda: worker_a.log() + worker_b.log(),
        )
        messages += [
            app.send_task("runs.train_run", args=[run.pk], queue="gpu")
            for run in (second, first, second)
        ]
        answers = [message.get(timeout=600) for message in messages]
        # A worker stores a task's result before it logs the task's success, so the logs are
        # only complete once both workers have shut down (warm shutdown: SIGTERM, then wait).
        assert (worker_a.stop(), worker_b.stop()) == (0, 0)
        logs = worker_a.log() + worker_b.log()
        assert sorted(answers) == ["finished", "finished", "skipped", "skipped"], logs
        finished_by = [
            len(re.findall(r"Task runs\.train_run\[[^\]]+\] succeeded in [^:]+: 'finished'", log))
            for log in (worker_a.log(), worker_b.log())
        ]
    assert finished_by == [1, 1], logs
    for run in (first, second):
        run.refresh_from_db()
        assert (run.status, run.attempts, run.step) == ("finished", 1, 2), logs
        started = Event.objects.filter(run=run, type="run_started")
        assert started.count() == 1, "a duplicate never started the run again"
    # Side by side: each run started before the other one finished.
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
