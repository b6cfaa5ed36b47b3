"""Task round trip through each broker: send `core.ping`, wait for the answer.

Starts a real solo worker per broker (embedded SQLite file, Redis, RabbitMQ) against a scratch
SQLite database, sends ROUNDS pings one after another and reports the median and 90th percentile
round trip. Brokers that are not reachable are listed as skipped. The table is printed and
appended to docs/performance.md with the machine it ran on.

    .venv/bin/python bench/broker_round_trip.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

#: How often the client polls a database result backend (Celery's default, 0.5 s, would dominate
#: the embedded round trip; Redis and RabbitMQ push results and ignore it). The dashboard's
#: "Ping a worker" polls as often.
RESULT_POLL = 0.05

BROKERS = {
    "embedded (sqla+sqlite, 0.1 s poll)": (
        "sqla+sqlite:///{tmp}/broker.sqlite3",
        "db+sqlite:///{tmp}/results.sqlite3",
    ),
    "redis": ("redis://127.0.0.1:6379/12", "redis://127.0.0.1:6379/12"),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", "rpc://"),
}


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme.startswith("sqla"):
        return True
    try:
        with socket.create_connection(
            (parts.hostname, parts.port or {"redis": 6379}.get(parts.scheme, 5672)), 1
        ):
            return True
    except OSError:
        return False


def measure(broker_url: str, backend: str, tmp: Path, rounds: int) -> list[float]:
    from celery import Celery

    from webapp.core.worker import worker_command

    env = {
        **os.environ,
        "GROUPWISE_VAR_DIR": str(tmp),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": backend,
    }
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
    )
    worker = subprocess.Popen(
        worker_command("default", loglevel="WARNING"),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from webapp import broker

        broker.register()
        app = Celery("bench", broker=broker_url, backend=backend)
        app.conf.task_default_queue = "default"
        if broker_url.startswith("amqp"):
            app.control.purge()
        app.send_task("core.ping").get(
            timeout=120, interval=RESULT_POLL
        )  # warm-up: the worker is consuming
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            app.send_task("core.ping").get(timeout=60, interval=RESULT_POLL)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> None:
    # Celery prefers these variables over the broker a client app is built with.
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for name, (broker_url, backend) in BROKERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            broker_url, backend = broker_url.format(tmp=tmp), backend.format(tmp=tmp)
            if not reachable(broker_url):
                rows.append(f"| {name} | skipped: not reachable | | |")
                continue
            times = measure(broker_url, backend, Path(tmp), args.rounds)
            p90 = statistics.quantiles(times, n=10)[-1]
            rows.append(f"| {name} | {args.rounds} | {statistics.median(times):.1f} | {p90:.1f} |")
    table = "\n".join(
        [
            heading("Broker round trip", f"Python {platform.python_version()}"),
            "",
            "`bench/broker_round_trip.py`: `core.ping` sent and awaited one at a time "
            "through a solo worker.",
            "",
            "| broker | rounds | median ms | p90 ms |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
