"""Real Celery worker subprocesses for tests, on the embedded broker, Redis or RabbitMQ."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from django.conf import settings

from tests.waiting import wait_until
from webapp.core.models import WorkerHeartbeat
from webapp.core.worker import worker_command

REPO = Path(__file__).resolve().parents[2]
REDIS_BROKER = "redis://127.0.0.1:6379/15"
RABBITMQ_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
START_SECONDS = 90.0


@dataclass(frozen=True)
class Broker:
    """A broker and result backend the worker and the test process share."""

    name: str
    broker_url: str
    result_backend: str


def broker(name: str, tmp_path: Path) -> Broker:
    if name == "embedded":
        return Broker(
            name,
            f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
            f"db+sqlite:///{tmp_path / 'results.sqlite3'}",
        )
    if name == "redis":
        return Broker(name, REDIS_BROKER, REDIS_BROKER)
    if name == "rabbitmq":
        return Broker(name, RABBITMQ_BROKER, "rpc://")
    raise ValueError(name)


def client_app(b: Broker) -> Celery:
    """A Celery client in the test process, configured like webapp's app but on ``b``."""
    app = Celery(
        f"test-client-{uuid.uuid4().hex[:6]}", broker=b.broker_url, backend=b.result_backend
    )
    app.conf.update(
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
        if b.name == "embedded"
        else {},
    )
    return app


def database_url() -> str:
    """The URL of the database the test process is using (the test database)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    name: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def heartbeat(self) -> WorkerHeartbeat | None:
        return WorkerHeartbeat.objects.filter(name=self.name, pid=self.process.pid).first()

    def wait_ready(self) -> WorkerHeartbeat:
        """Block until the worker's first heartbeat row exists (it is written once it consumes)."""

        def first_heartbeat() -> WorkerHeartbeat | None:
            row = self.heartbeat()
            if row is None and self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            return row

        return wait_until(
            first_heartbeat, START_SECONDS, what="the worker's first heartbeat", context=self.log
        )

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker ignored signal {signum}:\n{self.log()}") from None


@contextlib.contextmanager
def start_worker(
    b: Broker,
    tmp_path: Path,
    *,
    queues: str = "default,gpu",
    extra_env: dict[str, str] | None = None,
) -> Iterator[WorkerProcess]:
    """Run ``celery -A webapp worker`` (solo pool) against ``b`` and the test database."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": b.broker_url,
        "CELERY_RESULT_BACKEND": b.result_backend,
        "WORKER_HEARTBEAT_SECONDS": "0.5",
        "GROUPWISE_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(REPO),
        **(extra_env or {}),
    }
    log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            worker_command(
                queues,
                hostname=name,
                options=(
                    "--include",
                    "tests.webapp.worker_tasks",
                    "--without-mingle",
                    "--without-gossip",
                ),
            ),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, name.replace("%h", _hostname()), log_path)
    try:
        yield worker
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _hostname() -> str:
    import socket

    return socket.gethostname()
