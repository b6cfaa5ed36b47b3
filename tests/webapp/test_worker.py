"""A real Celery worker subprocess: task round trips, heartbeats and cooperative shutdown."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.conftest import require_service
from tests.waiting import wait_until
from tests.webapp.workers import RABBITMQ_BROKER, REDIS_BROKER, broker, client_app, start_worker
from webapp.core.models import WorkerHeartbeat

pytestmark = [pytest.mark.production, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _explicit_brokers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery prefers these variables over the broker a client app is built with; the production
    # profile sets them, and each test here picks its own broker.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)


def _prepare(name: str, tmp_path: Path):
    if name == "redis":
        require_service("Redis", REDIS_BROKER)
        redis.Redis.from_url(REDIS_BROKER).flushdb()
    if name == "rabbitmq":
        require_service("RabbitMQ", RABBITMQ_BROKER)
    b = broker(name, tmp_path)
    app = client_app(b)
    if name == "rabbitmq":
        app.control.purge()
    return b, app


@pytest.mark.parametrize("broker_name", ["embedded", "redis", "rabbitmq"])
def test_task_round_trip_and_heartbeat(broker_name: str, tmp_path: Path) -> None:
    b, app = _prepare(broker_name, tmp_path)
    with start_worker(b, tmp_path) as worker:
        first = worker.wait_ready()
        assert first.is_live()
        assert first.queues == ["default", "gpu"]
        assert WorkerHeartbeat.objects.live().filter(pk=first.pk).exists()

        answer = app.send_task("core.ping").get(timeout=60)
        assert answer["pong"] is True
        assert answer["pid"] == worker.process.pid

        # A task on the gpu queue reaches the same solo worker.
        answer = app.send_task("core.ping", queue="gpu").get(timeout=60)
        assert answer["pid"] == worker.process.pid

        assert worker.stop(signal.SIGTERM) == 0
        row = worker.heartbeat()
        assert row is not None and row.stopped_at is not None
        assert not WorkerHeartbeat.objects.live().filter(pk=row.pk).exists()


def test_heartbeat_advances_while_running(tmp_path: Path) -> None:
    b, _ = _prepare("embedded", tmp_path)
    with start_worker(b, tmp_path) as worker:
        first = worker.wait_ready()

        def refreshed() -> WorkerHeartbeat | None:
            row = worker.heartbeat()
            assert row is not None
            return row if row.last_seen > first.last_seen else None

        row = wait_until(refreshed, 30, what="the heartbeat to refresh", context=worker.log)
        assert row.started_at == first.started_at
        worker.stop()


def test_killed_worker_stops_counting_within_the_live_window(tmp_path: Path) -> None:
    b, _ = _prepare("embedded", tmp_path)
    with start_worker(b, tmp_path) as worker:
        worker.wait_ready()
        worker.stop(signal.SIGKILL)
        row = worker.heartbeat()
        assert row is not None
        assert row.stopped_at is None, "a killed worker cannot stamp its row"
        window = timedelta(seconds=settings.WORKER_LIVE_SECONDS)
        assert settings.WORKER_LIVE_SECONDS <= 30
        live_at = WorkerHeartbeat.objects.live
        assert live_at(now=row.last_seen + window - timedelta(seconds=1)).filter(pk=row.pk).exists()
        assert (
            not live_at(now=row.last_seen + window + timedelta(seconds=1))
            .filter(pk=row.pk)
            .exists()
        )
        assert not row.is_live(now=row.last_seen + window + timedelta(seconds=1))


def test_warm_shutdown_stops_a_running_task_between_steps(tmp_path: Path) -> None:
    b, app = _prepare("embedded", tmp_path)
    marker = tmp_path / "started"
    with start_worker(b, tmp_path) as worker:
        worker.wait_ready()
        result = app.send_task("tests.wait_for_stop", args=[str(marker), 300.0], queue="gpu")
        wait_until(marker.exists, 60, what="the task to start", context=worker.log)
        started = time.monotonic()
        assert worker.stop(signal.SIGTERM, timeout=60) == 0
        assert result.get(timeout=30) == "stopped"
        # The task returned on the stop request, not at its 300 s limit.
        assert time.monotonic() - started < 60
