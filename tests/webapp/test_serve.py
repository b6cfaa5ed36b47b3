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
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.waiting import wait_until
from tests.webapp.servers import REPO, embedded_env, run_dashboard


def test_serve_runs_dashboard_and_worker_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with run_dashboard(tmp_path) as dashboard:
        base = dashboard.base
        health = dashboard.health()
        assert health["checks"]["database"] == {"status": "ok", "vendor": "sqlite"}
        assert health["checks"]["broker"] == {"status": "ok", "transport": "sqla+sqlite"}
        assert health["checks"]["workers"]["live"] >= 1
        # The worker yields the CPU to the web server on the host they share.
        with sqlite3.connect(tmp_path / "var" / "groupwise.sqlite3", timeout=30) as db:
            (worker_pid,) = db.execute("SELECT pid FROM core_workerheartbeat").fetchone()
        here = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, dashboard.process.pid) == here
        assert os.getpriority(os.PRIO_PROCESS, worker_pid) == min(here + 10, 19)

        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login_page = browser.open(f"{base}/login/", timeout=10).read().decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page)
        assert match
        form = urllib.parse.urlencode(
            {
                "username": "admin",
                "password": dashboard.admin_password(),
                "csrfmiddlewaretoken": match.group(1),
            }
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
            f"ws://127.0.0.1:{dashboard.port}/ws/status/",
            additional_headers={"Cookie": cookie_header, "Origin": base},
            open_timeout=10,
        ) as ws:
            message = json.loads(ws.recv(timeout=10))
            assert message["type"] == "status"
            assert message["report"]["checks"]["workers"]["details"]["live"] >= 1
            # Ctrl-C while a browser still holds its socket open.
            dashboard.process.send_signal(signal.SIGINT)
            assert dashboard.process.wait(timeout=120) == 0, dashboard.log()
        text = dashboard.log()
        assert "Warm shutdown" in text
        assert text.rstrip().endswith("Stopped.")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{base}/healthz", timeout=2)


def test_serve_refuses_a_busy_port_with_advice(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO,
            env=embedded_env(tmp_path / "var"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"make run PORT={port + 1}" in result.stderr


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """Even a SIGKILLed `serve` leaves no server or worker behind (they get SIGTERM)."""
    import sqlite3

    with run_dashboard(tmp_path) as dashboard:
        dashboard.process.kill()
        dashboard.process.wait()
        database = tmp_path / "var" / "groupwise.sqlite3"

        def worker_stopped() -> bool:
            with sqlite3.connect(database, timeout=30) as db:
                rows = db.execute("SELECT stopped_at FROM core_workerheartbeat").fetchall()
            return bool(rows) and all(stopped for (stopped,) in rows)

        wait_until(
            worker_stopped,
            60,
            what="the worker to stamp its stop",
            interval=0.2,
            context=dashboard.log,
        )
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", dashboard.port), timeout=2).close()


def test_web_workers_below_one_are_refused_before_anything_starts() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--web-workers=0: use 1 or more"):
        call_command("serve", "--web-workers", "0", "--port", "1")


@pytest.mark.django_db(transaction=True)
@pytest.mark.production
def test_a_web_host_refuses_an_unprepared_database_naming_the_release_step(
    tmp_path: Path, settings: Any
) -> None:
    from django.core.management import CommandError, call_command

    from webapp.core.management.commands.serve import require_prepared

    settings.STATIC_ROOT = tmp_path / "static"
    settings.STATIC_ROOT.mkdir()
    with pytest.raises(CommandError, match="no static files are collected") as refused:
        require_prepared()
    assert "unapplied" not in str(refused.value)
    (settings.STATIC_ROOT / "groupwise.css").write_text("")
    require_prepared()
    call_command("migrate", "accounts", "zero", verbosity=0)
    try:
        with pytest.raises(
            CommandError,
            match=r"has 1 unapplied migration \(accounts\.0001_initial\): run the release step.*"
            r"`serve --migrate`",
        ):
            require_prepared()
    finally:
        call_command("migrate", verbosity=0)
    require_prepared()
