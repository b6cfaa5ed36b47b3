"""The README's first command end to end: `manage.py serve` on the embedded defaults.

It starts the ASGI server and a worker, prints the URL and the admin password; the page, the
status socket and a worker ping work through the real stack; Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate, what: str, log: Path, seconds: float = START_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text(errors='replace')}")


@pytest.fixture
def served(tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        GROUPWISE_VAR_DIR=str(tmp_path / "var"),
        CELERY_BROKER_URL="",
        CELERY_RESULT_BACKEND="",
        GROUPWISE_ADMIN_PASSWORD="",
        WORKER_HEARTBEAT_SECONDS="0.5",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


def test_serve_runs_dashboard_and_worker_and_stops_on_ctrl_c(served) -> None:
    process, port, log = served
    base = f"http://127.0.0.1:{port}"
    _wait_for(lambda: f"running at {base}/" in log.read_text(), "the printed URL", log)
    password = re.search(r"password '([^']+)'", log.read_text()).group(1)

    def live_workers() -> int:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            return json.load(response)["checks"]["workers"]["live"]

    _wait_for(lambda: live_workers() >= 1, "a live worker in /healthz", log)
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        health = json.load(response)
    assert health["checks"]["database"]["status"] == "ok"
    assert health["checks"]["broker"] == {"status": "ok", "transport": "sqla+sqlite"}

    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = browser.open(f"{base}/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    form = urllib.parse.urlencode(
        {"username": "admin", "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    home = browser.open(f"{base}/login/", data=form, timeout=10)
    assert home.geturl() == f"{base}/"
    assert b'id="status-panel"' in home.read()

    cookies = {c.name: c.value for c in jar}
    ping = urllib.request.Request(
        f"{base}/status/ping",
        data=b"",
        headers={"X-CSRFToken": cookies["csrftoken"], "Referer": f"{base}/"},
    )
    answer = json.load(browser.open(ping, timeout=30))
    assert answer["ok"] is True, answer

    cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with connect(
        f"ws://127.0.0.1:{port}/ws/status/",
        additional_headers={"Cookie": cookie_header, "Origin": base},
        open_timeout=10,
    ) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "status"
    assert message["report"]["checks"]["workers"]["details"]["live"] >= 1

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert "Warm shutdown" in text
    assert text.rstrip().endswith("Stopped.")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)


def test_serve_refuses_a_busy_port_with_advice(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "GROUPWISE_VAR_DIR": str(tmp_path / "var")}
        env.pop("DATABASE_URL", None)
        result = subprocess.run(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"make run PORT={port + 1}" in result.stderr
