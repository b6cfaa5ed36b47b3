"""The web process's own look at worker liveness, on a timer.

Workers recover each other's runs on every beat, and a health report does too; with no worker
left (a web-only host) and nobody asking for the health (a script polling a run's API), only this
timer notices a dead worker. ``start()`` runs a daemon thread that sends ``liveness_checked`` every
``GROUPWISE_LIVENESS_CHECK_SECONDS`` (0: never): the runs and sweeps apps' receivers then recover
dead workers' work, so a run is marked within ``WORKER_LIVE_SECONDS`` plus one period. The ASGI
application starts it once per process; nothing else does (tests ask for it by running a
server). Each period costs a few small queries per web process, and several processes noticing
the same run at once is harmless (the receivers' updates are conditional).
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from webapp.core import heartbeat

logger = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_starting = threading.Lock()


def start() -> None:
    """Start this process's timer, unless it runs already or the period is 0."""
    global _thread
    period = settings.GROUPWISE_LIVENESS_CHECK_SECONDS
    with _starting:
        if _thread is not None or not period:
            return
        _thread = threading.Thread(
            target=_watch, args=(period,), name="groupwise-liveness", daemon=True
        )
        _thread.start()


def _watch(period: float) -> None:
    while True:
        time.sleep(period)
        try:
            heartbeat.liveness_checked.send(sender=_watch)
        except Exception:
            # A database that is down or restarting must not end the timer: the next period retries.
            logger.exception("liveness check failed")
        finally:
            close_old_connections()
