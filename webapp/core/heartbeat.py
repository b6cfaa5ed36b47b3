"""Worker heartbeats and cooperative shutdown, wired to Celery's worker signals.

A worker writes its ``WorkerHeartbeat`` row when it is ready and then every
``WORKER_HEARTBEAT_SECONDS`` from a daemon thread; a clean shutdown stamps ``stopped_at``. A
killed worker stops refreshing its row and drops out of ``WorkerHeartbeat.objects.live()`` within
``WORKER_LIVE_SECONDS``.

``stop_requested`` is set as soon as the worker is asked to shut down (Ctrl-C, SIGTERM). Long
tasks check it between steps and return early, so a warm shutdown never waits hours for a run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import signals
from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
from django.dispatch import Signal
from django.utils import timezone

from webapp.core.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

stop_requested = threading.Event()
"""Set when this worker process has been asked to shut down."""


#: Sent whenever a process has just looked at worker liveness (a worker starting or beating, a
#: health check), so that the apps holding dead workers' work recover it: the runs app connects
#: its orphan recovery (``webapp.runs.recovery``) in its ``ready``. Core knows no feature app.
liveness_checked = Signal()


class HeartbeatThread(threading.Thread):
    """Refreshes one worker's heartbeat row until :meth:`stop` is called."""

    def __init__(self, name: str, queues: list[str]) -> None:
        super().__init__(name="groupwise-heartbeat", daemon=True)
        self.worker_name = name
        self.queues = queues
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.pid_namespace = pid_namespace()
        self.current_run_id: int | None = None
        self._stopped = threading.Event()

    def beat(self) -> None:
        """Write the row now (creating it on the first beat)."""
        now = timezone.now()
        WorkerHeartbeat.objects.update_or_create(
            name=self.worker_name,
            host=self.host,
            pid=self.pid,
            defaults={
                "queues": self.queues,
                "current_run_id": self.current_run_id,
                "last_seen": now,
                "stopped_at": None,
            },
            create_defaults={
                "pid_namespace": self.pid_namespace,
                "queues": self.queues,
                "current_run_id": self.current_run_id,
                "last_seen": now,
                "started_at": now,
                "stopped_at": None,
            },
        )

    def run(self) -> None:
        while not self._stopped.wait(settings.WORKER_HEARTBEAT_SECONDS):
            try:
                self.beat()
                liveness_checked.send(sender=HeartbeatThread)
            except Exception:
                # A busy or restarting database must not kill the worker: the next beat retries,
                # and a long gap simply shows the worker as not live.
                logger.exception("heartbeat write failed")
            finally:
                close_old_connections()

    def stop(self) -> None:
        """Stop beating and stamp the row as cleanly stopped."""
        self._stopped.set()
        self.join(timeout=settings.WORKER_HEARTBEAT_SECONDS + 5)
        WorkerHeartbeat.objects.filter(name=self.worker_name, host=self.host, pid=self.pid).update(
            stopped_at=timezone.now()
        )
        close_old_connections()


_thread: HeartbeatThread | None = None


def this_worker() -> str:
    """This worker as a run records it: its Celery node name (``groupwise-8311@host``) once it
    beats, else the host name (a task executed outside a worker)."""
    return _thread.worker_name if _thread is not None else socket.gethostname()


def pid_namespace() -> str:
    """This process's pid namespace, e.g. ``pid:[4026531836]``; empty where there is none to
    read (not Linux)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def gone_processes(rows: QuerySet[WorkerHeartbeat]) -> list[WorkerHeartbeat]:
    """Those of ``rows`` whose process is known to be gone: on this host and in this process's
    pid namespace, and no process has their pid. Their heartbeat may still look fresh; they will
    never beat again.

    Both are needed: containers that share the host's name (host networking) each have their
    own pids. A pid another process took since only leaves the row to age out as usual.
    """
    namespace = pid_namespace()
    if not namespace:
        return []
    here = rows.filter(host=socket.gethostname(), pid_namespace=namespace)
    return [row for row in here if not _process_exists(row.pid)]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Another user's process holds the pid: it exists.
        return True
    return True


def set_current_run(run_id: int | None) -> None:
    """Record the run this worker executes (None when idle) and beat at once."""
    if _thread is not None:
        _thread.current_run_id = run_id
        _thread.beat()


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    global _thread
    stop_requested.clear()
    queues = sorted(sender.app.amqp.queues.consume_from)
    _thread = HeartbeatThread(sender.hostname, queues)
    _thread.beat()
    liveness_checked.send(sender=HeartbeatThread)
    _thread.start()
    logger.info("heartbeat started for %s on queues %s", sender.hostname, ",".join(queues))


@signals.worker_shutting_down.connect
def _request_stop(**_: Any) -> None:
    stop_requested.set()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    global _thread
    if _thread is not None:
        _thread.stop()
        _thread = None
