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

A child that dies on its own (killed, crashed) is started again after a pause that grows with each
death in a row, and the other keeps running; after ``--max-restarts`` deaths in a row ``serve``
gives up, stops the rest and exits non-zero, so a process manager or a person sees the fault.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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
#: Pauses before each restart of a child that died, by its deaths in a row (the last repeats):
#: a crash that repeats at once does not spin the host, a single kill is repaired in a second.
RESTART_PAUSES_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A child that ran this long before dying was healthy: its deaths in a row start again at zero.
HEALTHY_SECONDS = 120.0
MAX_RESTARTS = 5


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
            "--max-restarts",
            type=int,
            default=MAX_RESTARTS,
            help="Times in a row the server or the worker is started again after dying on its "
            "own before serve gives up and exits (0: never restart).",
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
        max_restarts = options["max_restarts"]
        if max_restarts < 0:
            raise CommandError(f"--max-restarts={max_restarts}: use 0 or more")
        _require_free_port(host, port)
        if options["migrate"] or connection.vendor == "sqlite":
            call_command("migrate", interactive=False, verbosity=0)
            call_command("collectstatic", interactive=False, verbosity=0)
        else:
            require_prepared()
        call_command("ensure_admin", stdout=self.stdout)

        children = {
            "server": Child(
                "server",
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
                ],
            )
        }
        if not options["no_worker"]:
            children["worker"] = Child(
                "worker",
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
                    _signal(child.process, signal.SIGTERM)
            else:
                for child in children.values():
                    _signal(child.process, signal.SIGKILL)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        _wait_listening(host, port, children["server"].process)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"Groupwise is running at {url}  (Ctrl-C to stop)"))
        self.stdout.flush()

        exit_code = _supervise(children, stopping, max_restarts, self.say)
        if exit_code:
            raise CommandError(f"stopped with exit code {exit_code}", returncode=exit_code)
        self.stdout.write("Stopped.")

    def say(self, line: str) -> None:
        """One line of the supervisor's log, written at once (a restart is news while it lasts)."""
        self.stdout.write(line)
        self.stdout.flush()


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


@dataclass
class Child:
    """One supervised child: how to start it, and its current process (started at creation)."""

    name: str
    command: list[str]
    niceness: int = 0

    def __post_init__(self) -> None:
        self.deaths_in_a_row = 0
        #: When a dead child is due to start again; None while it runs (or was stopped).
        self.restart_at: float | None = None
        self.start()

    def start(self) -> None:
        self.process = _spawn(self.command, self.niceness)
        self.started = time.monotonic()
        self.restart_at = None


def _supervise(
    children: dict[str, Child], stopping: dict[str, int], max_restarts: int, say: Any
) -> int:
    """Keep the children running until a stop is requested and every child has exited.

    A child that dies on its own is started again (pauses in ``RESTART_PAUSES_SECONDS``) until it
    has died ``max_restarts + 1`` times in a row; then the others are stopped. Returns 0 after a
    requested stop in which every running child exited cleanly, else the first non-zero exit code.
    """
    exit_code = 0
    while not stopping["requests"] or any(c.process.poll() is None for c in children.values()):
        for child in children.values():
            code = child.process.poll()
            if code is None or stopping["requests"]:
                continue
            now = time.monotonic()
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                    say(f"The {child.name} is running again (pid {child.process.pid}).")
                continue
            # What the dead child left in its session (uvicorn's server processes, a run's rank
            # processes) must go too, or a new server could not listen on the port.
            _kill_session(child.process)
            if now - child.started >= HEALTHY_SECONDS:
                child.deaths_in_a_row = 0
            child.deaths_in_a_row += 1
            if child.deaths_in_a_row > max_restarts:
                say(
                    f"The {child.name} (pid {child.process.pid}) exited unexpectedly (code {code}) "
                    f"{child.deaths_in_a_row} time(s) in a row, --max-restarts={max_restarts}: "
                    "giving up and stopping the rest."
                )
                exit_code = exit_code or abs(code) or 1
                stopping["requests"] = 1
                for other in children.values():
                    _signal(other.process, signal.SIGTERM)
                break
            pause = RESTART_PAUSES_SECONDS[
                min(child.deaths_in_a_row, len(RESTART_PAUSES_SECONDS)) - 1
            ]
            child.restart_at = now + pause
            say(
                f"The {child.name} (pid {child.process.pid}) exited unexpectedly (code {code}); "
                f"starting it again in {pause:g} s (restart {child.deaths_in_a_row} of "
                f"{max_restarts} in a row)."
            )
        time.sleep(0.2)
    if stopping["requests"] == 1:
        for child in children.values():
            # A child that was waiting to start again had already died, and was reported.
            if child.restart_at is None and child.process.returncode not in (0, -signal.SIGTERM):
                exit_code = exit_code or abs(child.process.returncode) or 1
    return exit_code


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a dead child's session (its process group, as ``_spawn`` made it
    the group's leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
