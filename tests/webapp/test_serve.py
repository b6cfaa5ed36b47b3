"""The README's first command end to end: `manage.py serve` on the embedded defaults.

It starts the ASGI server and a worker, prints the URL and the admin password; the page, the
status socket and a worker ping work through the real stack; Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import contextlib
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
from webapp import cores


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
        # Unset, the host's cores decide: one server process per core, torch threads on all but
        # one (at least one) in the worker.
        cpus = cores.usable_cpus()
        processes = cores.default_web_workers(cpus)
        dashboard.wait_for(
            lambda: len(web_processes(dashboard.process.pid)) == processes,
            f"{processes} server processes",
        )
        assert f"torch threads: {cores.default_worker_torch_threads(cpus)} " in dashboard.log()

        browser, cookies = log_in(dashboard)
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


def test_several_server_processes_each_follow_the_event_table(tmp_path: Path) -> None:
    """With the embedded profile's in-process channel layer, a socket on any of the server
    processes gets events another process stored; the options and settings are applied."""
    with run_dashboard(
        tmp_path, "--web-workers", "3", env={"GROUPWISE_WORKER_TORCH_THREADS": "3"}
    ) as dashboard:

        def three_processes() -> list[int] | None:
            found = web_processes(dashboard.process.pid)
            return found if len(found) == 3 else None

        pids = dashboard.wait_for(three_processes, "3 server processes")
        assert "torch threads: 3 (GROUPWISE_WORKER_TORCH_THREADS)" in dashboard.log()
        run_id = int(manage_shell(tmp_path, MAKE_RUN))
        _browser, cookies = log_in(dashboard)
        cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        with contextlib.ExitStack() as stack:
            sockets: list[Any] = []
            served_by: set[int] = set()
            # The kernel hands each connection to whichever process accepts first: open sockets
            # until two processes hold some (each socket has odds of 2/3 to land elsewhere).
            while len(served_by) < 2 and len(sockets) < 40:
                ws = stack.enter_context(
                    connect(
                        f"ws://127.0.0.1:{dashboard.port}/ws/runs/{run_id}/",
                        additional_headers={"Cookie": cookie_header, "Origin": dashboard.base},
                        open_timeout=30,
                    )
                )
                ws.send(json.dumps({"type": "subscribe", "after": 0}))
                assert json.loads(ws.recv(timeout=30))["events"] == []
                sockets.append(ws)
                served_by.add(serving_process(ws.socket.getsockname()[1], dashboard.port, pids))
            assert len(served_by) >= 2, f"{len(sockets)} sockets all on one process"
            manage_shell(tmp_path, STORE_EVENT.format(run_id=run_id))
            for ws in sockets:
                message = json.loads(ws.recv(timeout=60))
                assert [e["seq"] for e in message["events"]] == [1]
                assert message["events"][0]["payload"] == {"message": "from another process"}


MAKE_RUN = """
from django.contrib.auth.models import User
from tests.webapp.personas import make_run
print(make_run(User.objects.get(username="admin")).pk)
"""
STORE_EVENT = """
from django.utils import timezone
from webapp.runs.models import Event
Event.objects.create(
    run_id={run_id}, seq=1, type="log_line", payload={{"message": "from another process"}},
    time=timezone.now(),
)
"""


def manage_shell(tmp_path: Path, code: str) -> str:
    """Run ``code`` in `manage.py shell` on the dashboard's database; its printed output."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=REPO,
        env=embedded_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def log_in(dashboard: Any) -> tuple[urllib.request.OpenerDirector, dict[str, str]]:
    """A browser logged in as the admin through the login form, and its cookies."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = browser.open(f"{dashboard.base}/login/", timeout=30).read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page)
    assert match
    form = urllib.parse.urlencode(
        {
            "username": "admin",
            "password": dashboard.admin_password(),
            "csrfmiddlewaretoken": match.group(1),
        }
    ).encode()
    home = browser.open(f"{dashboard.base}/login/", data=form, timeout=30)
    assert home.geturl() == f"{dashboard.base}/"
    assert b'id="status-panel"' in home.read()
    return browser, {c.name: c.value for c in jar}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def web_processes(serve_pid: int) -> list[int]:
    """The processes that answer requests: uvicorn's workers, or uvicorn itself without them."""
    (server,) = [pid for pid in _children(serve_pid) if " -m uvicorn " in _cmdline(pid)]
    workers = [pid for pid in _children(server) if "spawn_main" in _cmdline(pid)]
    return workers or [server]


def serving_process(client_port: int, server_port: int, pids: list[int]) -> int:
    """Which of ``pids`` holds the server end of the TCP connection from ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inodes.add(f"socket:[{inode}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    raise AssertionError(f"no server process holds the connection from port {client_port}")


def child_pid(serve_pid: int, module: str) -> int | None:
    """The pid of serve's child running ``python -m module``, if one runs."""
    found = [pid for pid in _children(serve_pid) if f" -m {module} " in _cmdline(pid)]
    return found[0] if found else None


def answers(dashboard: Any) -> bool:
    """Whether the dashboard answers /healthz (a server that is down or starting refuses)."""
    try:
        return bool(dashboard.health())
    except OSError:
        return False


def api_run(browser: urllib.request.OpenerDirector, dashboard: Any, run_id: int) -> dict:
    with browser.open(f"{dashboard.base}/api/runs/{run_id}/", timeout=60) as response:
        return json.load(response)


ORPHAN_OF = """
from django.contrib.auth.models import User
from tests.webapp.personas import make_run
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run
run = make_run(User.objects.get(username="admin"), status=Run.Status.RUNNING)
# Claimed while the worker lived, as a real claim is.
dead = WorkerHeartbeat.objects.filter(pid={pid})
Run.objects.filter(pk=run.pk).update(started_at=dead.get().started_at, worker="{name}")
dead.update(current_run_id=run.pk)
print(run.pk)
"""


def test_a_dead_worker_or_server_is_started_again_up_to_the_limit(tmp_path: Path) -> None:
    """kill -9 of the server, then of the worker: each is started again and the web answers; the
    dead worker's run is marked through reads of its API alone (no /healthz after the kill) and
    at once (the live window is an hour: only its pid being gone can tell). A second death of
    the worker is past --max-restarts=1: serve stops the server and exits non-zero."""
    env = {"WORKER_LIVE_SECONDS": "3600"}
    with run_dashboard(tmp_path, "--max-restarts", "1", env=env) as dashboard:
        serve = dashboard.process.pid
        browser, _cookies = log_in(dashboard)

        server = child_pid(serve, "uvicorn")
        assert server is not None
        os.kill(server, signal.SIGKILL)
        dashboard.wait_for(
            lambda: child_pid(serve, "uvicorn") not in (None, server), "a new server process"
        )
        dashboard.wait_for(lambda: answers(dashboard), "the new server to answer")
        assert f"The server (pid {server}) exited unexpectedly (code -9); starting it again in " \
            "1 s (restart 1 of 1 in a row)." in dashboard.log()  # fmt: skip

        worker = child_pid(serve, "celery")
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        # The dead worker was training this run (its heartbeat says so from now on).
        name = f"groupwise-{dashboard.port}@{socket.gethostname()}"
        run_id = int(manage_shell(tmp_path, ORPHAN_OF.format(name=name, pid=worker)))
        run = dashboard.wait_for(
            lambda: (
                (found := api_run(browser, dashboard, run_id))["status"] == "interrupted" and found
            ),
            "the dead worker's run to read as interrupted",
        )
        assert run["error"].startswith(f"worker {name} (pid {worker}) is gone: resume")
        restarted = dashboard.wait_for(
            lambda: child_pid(serve, "celery") not in (None, worker) and child_pid(serve, "celery"),
            "a new worker process",
        )
        database = tmp_path / "var" / "groupwise.sqlite3"

        def beating() -> bool:
            with sqlite3.connect(database, timeout=30) as db:
                query = "SELECT 1 FROM core_workerheartbeat WHERE pid = ? AND stopped_at IS NULL"
                return db.execute(query, (restarted,)).fetchone() is not None

        dashboard.wait_for(beating, "the new worker's heartbeat")
        assert answers(dashboard)
        assert f"The worker (pid {worker}) exited unexpectedly (code -9); starting it again " \
            "in 1 s (restart 1 of 1 in a row)." in dashboard.log()  # fmt: skip
        assert f"The worker is running again (pid {restarted})." in dashboard.log()

        os.kill(restarted, signal.SIGKILL)
        assert dashboard.process.wait(timeout=120) != 0
        assert f"The worker (pid {restarted}) exited unexpectedly (code -9) 2 time(s) in a row, " \
            "--max-restarts=1: giving up and stopping the rest." in dashboard.log()  # fmt: skip
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", dashboard.port), timeout=2).close()


def test_a_web_only_host_marks_dead_workers_runs_without_being_asked(tmp_path: Path) -> None:
    """No worker on this host and no /healthz request: the web process's own timer marks the run
    of a worker elsewhere that stopped beating, within the live window plus one period."""
    env = {"WORKER_LIVE_SECONDS": "2", "GROUPWISE_LIVENESS_CHECK_SECONDS": "0.5"}
    with run_dashboard(tmp_path, "--no-worker", env=env) as dashboard:
        browser, _cookies = log_in(dashboard)
        run_id = int(manage_shell(tmp_path, ORPHAN_ELSEWHERE))
        run = dashboard.wait_for(
            lambda: (
                (found := api_run(browser, dashboard, run_id))["status"] == "interrupted" and found
            ),
            "the run to read as interrupted",
        )
        assert run["error"].startswith(
            "worker groupwise-8311@gpu-host-9 stopped sending heartbeats"
        )


ORPHAN_ELSEWHERE = """
from django.contrib.auth.models import User
from django.utils import timezone
from tests.webapp.personas import make_run
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run
run = make_run(User.objects.get(username="admin"), status=Run.Status.RUNNING)
now = timezone.now()
name = "groupwise-8311@gpu-host-9"
Run.objects.filter(pk=run.pk).update(started_at=now, worker=name)
WorkerHeartbeat.objects.create(
    name=name, host="gpu-host-9", pid=4242, queues=["gpu"], current_run_id=run.pk,
    started_at=now, last_seen=now,
)
print(run.pk)
"""


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
    from django.db.migrations.loader import MigrationLoader

    from webapp.core.management.commands.serve import require_prepared

    settings.STATIC_ROOT = tmp_path / "static"
    settings.STATIC_ROOT.mkdir()
    with pytest.raises(CommandError, match="no static files are collected") as refused:
        require_prepared()
    assert "unapplied" not in str(refused.value)
    (settings.STATIC_ROOT / "groupwise.css").write_text("")
    require_prepared()
    call_command("migrate", "accounts", "zero", verbosity=0)
    # Every accounts migration is unapplied now; the message counts them and names the first.
    count = sum(app == "accounts" for app, _name in MigrationLoader(None).disk_migrations)
    plural = "s" if count > 1 else ""
    try:
        with pytest.raises(
            CommandError,
            match=rf"has {count} unapplied migration{plural} \(accounts\.0001_initial[,)].*"
            r"run the release step.*`serve --migrate`",
        ):
            require_prepared()
    finally:
        call_command("migrate", verbosity=0)
    require_prepared()
