"""Start the dashboard: prepare the database, ensure an admin, then run the ASGI server (HTTP and
websockets on one port) and a Celery worker side by side until Ctrl-C.

Preparing is the release step: migrate and collect static files. The embedded SQLite database
lives on this host alone, so ``serve`` always prepares it. A server database (PostgreSQL) is
shared by every web host: it is prepared once per release (``manage.py migrate`` and
``collectstatic``, or one host started with ``--migrate``), and a host started without it refuses
to start on an unprepared one, naming the step, so hosts starting together never race to migrate.

Ctrl-C asks both to stop: the server closes its connections and the worker finishes a warm
shutdown, during which a running training task sees the stop request between steps, saves its
state and marks its run interrupted (resumable). A second Ctrl-C stops both at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from webapp import cores
from webapp.core.worker import worker_command

SERVER_START_SECONDS = 60
#: The worker runs at a lower CPU priority than the web server: on a host they share, a training
#: step's busy cores never hold up the dashboard's answers (the worker still gets every idle cycle).
WORKER_NICENESS = 10


class Command(BaseCommand):
    help = "Run the Groupwise dashboard and a worker on this machine (the README's first command)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="Port for HTTP and websockets.")
        parser.add_argument(
            "--no-worker", action="store_true", help="Run only the server (workers run elsewhere)."
        )
        parser.add_argument(
            "--web-workers",
            type=int,
            default=None,
            help="Server processes; more answer more API requests at once (docs/operations.md). "
            "Default: GROUPWISE_WEB_WORKERS, else one per usable core, at most "
            f"{cores.MAX_WEB_WORKERS} (here {settings.GROUPWISE_WEB_WORKERS}).",
        )
        parser.add_argument(
            "--migrate",
            action="store_true",
            help="Migrate the database and collect static files first: the release step, on one "
            "host (the embedded SQLite database is always prepared).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        web_workers = options["web_workers"]
        if web_workers is None:
            web_workers = settings.GROUPWISE_WEB_WORKERS
        elif web_workers < 1:
            raise CommandError(f"--web-workers={web_workers}: use 1 or more")
        _require_free_port(host, port)
        if options["migrate"] or connection.vendor == "sqlite":
            call_command("migrate", interactive=False, verbosity=0)
            call_command("collectstatic", interactive=False, verbosity=0)
        else:
            require_prepared()
        call_command("ensure_admin", stdout=self.stdout)

        children: dict[str, subprocess.Popen[bytes]] = {
            "server": _spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "webapp.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--lifespan",
                    "off",
                    # Open dashboard sockets must not hold up Ctrl-C.
                    "--timeout-graceful-shutdown",
                    "5",
                    "--log-level",
                    "warning",
                    # One process serves in place; more run under uvicorn's supervisor.
                    *(["--workers", str(web_workers)] if web_workers > 1 else []),
                ]
            )
        }
        if not options["no_worker"]:
            children["worker"] = _spawn(
                worker_command("gpu,default", hostname=f"groupwise-{port}@%h"),
                niceness=WORKER_NICENESS,
            )

        stopping = {"requests": 0}

        def request_stop(signum: int, _frame: Any) -> None:
            stopping["requests"] += 1
            if stopping["requests"] == 1:
                self.stdout.write(
                    "\nStopping (a running step finishes first; Ctrl-C again to force)…"
                )
                for child in children.values():
                    _signal(child, signal.SIGTERM)
            else:
                for child in children.values():
                    _signal(child, signal.SIGKILL)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        _wait_listening(host, port, children["server"])
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"Groupwise is running at {url}  (Ctrl-C to stop)"))
        self.stdout.flush()

        exit_code = _supervise(children, stopping, self.stdout.write)
        if exit_code:
            raise CommandError(f"stopped with exit code {exit_code}", returncode=exit_code)
        self.stdout.write("Stopped.")


def require_prepared() -> None:
    """Raise ``CommandError`` naming the release step unless the database is migrated and the
    static files are collected."""
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    problems = []
    if pending:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _backwards in pending[:3])
        more = ", ..." if len(pending) > 3 else ""
        count = f"{len(pending)} unapplied migration" + ("s" if len(pending) > 1 else "")
        problems.append(f"the database has {count} ({names}{more})")
    if not any(Path(settings.STATIC_ROOT).iterdir()):
        problems.append(f"no static files are collected in {settings.STATIC_ROOT}")
    if problems:
        raise CommandError(
            "; ".join(problems) + ": run the release step once (`manage.py migrate` and "
            "`manage.py collectstatic --noinput`), or start one web host with `serve --migrate`"
        )


def _spawn(command: list[str], niceness: int = 0) -> subprocess.Popen[bytes]:
    # A new session: the terminal's Ctrl-C reaches only this supervisor, which then sends each
    # child exactly one SIGTERM (a second signal would turn Celery's warm shutdown cold).
    def prepare() -> None:
        if sys.platform == "linux":
            _stop_with_parent()
        os.nice(niceness)

    return subprocess.Popen(
        command, start_new_session=True, env=os.environ.copy(), preexec_fn=prepare
    )


def _stop_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies (even by SIGKILL), never outlive it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal(child: subprocess.Popen[bytes], signum: int) -> None:
    if child.poll() is None:
        child.send_signal(signum)


def _require_free_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pick another port, "
                f"e.g. `make run PORT={port + 1}`"
            ) from None


def _wait_listening(host: str, port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CommandError(f"the ASGI server exited with code {server.returncode} at start-up")
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise CommandError(
        f"the ASGI server did not listen on {host}:{port} within {SERVER_START_SECONDS} s"
    )


def _supervise(
    children: dict[str, subprocess.Popen[bytes]], stopping: dict[str, int], say: Any
) -> int:
    """Wait until every child has exited; if one dies on its own, stop the others.

    Returns 0 after a requested stop in which every child exited cleanly, else the first
    non-zero exit code.
    """
    exit_code = 0
    while any(child.poll() is None for child in children.values()):
        for name, child in children.items():
            code = child.poll()
            if code is not None and not stopping["requests"]:
                say(f"The {name} exited unexpectedly (code {code}); stopping the rest.")
                exit_code = exit_code or code or 1
                stopping["requests"] = 1
                for other in children.values():
                    _signal(other, signal.SIGTERM)
        time.sleep(0.2)
    if stopping["requests"] == 1:
        for child in children.values():
            if child.returncode not in (0, -signal.SIGTERM):
                exit_code = exit_code or abs(child.returncode) or 1
    return exit_code
