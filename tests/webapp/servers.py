"""`manage.py serve` (the README's first command) as a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engine.net.ports import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 120.0
T = TypeVar("T")


@dataclass
class Dashboard:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    #: The environment serve runs in (its database, media and settings).
    env: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def shell(self, code: str) -> str:
        """What ``code`` prints, run by ``manage.py shell`` on this server's database."""
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def admin_password(self) -> str:
        match = re.search(r"password '([^']+)'", self.log())
        assert match, self.log()
        return match.group(1)

    def manage(self, *args: str) -> str:
        """Run ``manage.py ARGS`` on the dashboard's database; its output (fails on an error)."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def health(self) -> dict:
        # Generous: the first request of a cold server on a loaded 2-core machine took over 5 s
        # (CI failed on it); a server that is merely slow must not fail the test.
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=60) as response:
            return json.load(response)

    def wait_for(self, predicate: Callable[[], T | None], what: str) -> T:
        """``predicate``'s first truthy value; fails at once if serve exits, with its log after
        ``START_SECONDS``."""

        def serving() -> T | None:
            value = predicate()
            if not value and self.process.poll() is not None:
                raise AssertionError(f"serve exited ({self.process.returncode}):\n{self.log()}")
            return value

        return wait_until(serving, START_SECONDS, what=what, interval=0.2, context=self.log)


def embedded_env(var_dir: Path) -> dict[str, str]:
    """The environment of a fresh machine: embedded defaults under ``var_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        GROUPWISE_VAR_DIR=str(var_dir),
        CELERY_BROKER_URL="",
        CELERY_RESULT_BACKEND="",
        GROUPWISE_ADMIN_PASSWORD="",
        WORKER_HEARTBEAT_SECONDS="0.5",
    )
    return env


@contextlib.contextmanager
def run_dashboard(
    tmp_path: Path, *options: str, env: Mapping[str, str] | None = None
) -> Iterator[Dashboard]:
    """Start `manage.py serve` with further ``options`` and ``env`` on the embedded defaults,
    wait for its URL and a live worker (unless ``--no-worker``); kill it on exit if still up."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    environment = {**embedded_env(tmp_path / "var"), **(env or {})}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), *options],
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    dashboard = Dashboard(process, port, log_path, environment)
    try:
        dashboard.wait_for(lambda: f"running at {dashboard.base}/" in dashboard.log(), "the URL")
        if "--no-worker" not in options:
            dashboard.wait_for(
                lambda: dashboard.health()["checks"]["workers"]["live"] >= 1, "a worker"
            )
        yield dashboard
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
