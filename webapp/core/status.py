"""The deployment's health: database, broker, live workers, channel layer and model directory.

``collect()`` answers both the public ``/healthz`` (counts only) and, through ``collect_for``,
the home page's status panel (with worker details, and the run a worker trains only for those who
may see that run). Each check reports ``ok`` or ``error`` with a message that says what to fix;
no check raises, and each network check gives up after ``CHECK_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.dispatch import Signal
from django.utils import timezone

from webapp.celery import app as celery_app
from webapp.core import heartbeat
from webapp.core.models import WorkerHeartbeat

CHECK_TIMEOUT_SECONDS = 2

#: Sent with ``viewer`` and ``run_ids`` (a set); a receiver returns the subset ``viewer`` may
#: see. Core knows no runs: the runs app connects its rule in its ``ready``. Unanswered, no run
#: id is shown.
visible_run_ids = Signal()


@dataclass(frozen=True)
class Check:
    """One component's state, ``ok`` or ``error``, with a message that says what to fix."""

    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def check_database() -> Check:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check("error", f"database unreachable: {exc}; check DATABASE_URL")
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Check(
        "ok", f"{connection.vendor} answered", {"vendor": connection.vendor, "ms": elapsed_ms}
    )


def check_broker() -> Check:
    transport = celery_app.conf.broker_url.split("://", 1)[0]
    started = time.perf_counter()
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return Check(
            "error",
            f"broker unreachable ({transport}): {exc}; check CELERY_BROKER_URL",
            {"transport": transport},
        )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Check("ok", f"{transport} broker connected", {"transport": transport, "ms": elapsed_ms})


def check_workers() -> Check:
    # The web process notices dead workers' runs too, whenever someone looks at the health.
    heartbeat.liveness_checked.send(sender=check_workers)
    live = list(WorkerHeartbeat.objects.live())
    details = {
        "live": len(live),
        "workers": [
            {
                "name": w.name,
                "host": w.host,
                "pid": w.pid,
                "queues": w.queues,
                "training": w.current_run_id is not None,
                "current_run_id": w.current_run_id,
                "last_seen": w.last_seen.isoformat(),
            }
            for w in live
        ],
    }
    if not live:
        return Check(
            "error",
            "no live worker: start one with `make run`, or "
            "`celery -A webapp worker -P solo -Q gpu,default` on a GPU host",
            details,
        )
    return Check("ok", f"{len(live)} live worker(s)", details)


def check_channel_layer() -> Check:
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    if not settings.REDIS_URL:
        return Check(
            "ok", "in-process layer; live pages follow the event table", {"backend": backend}
        )
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_SECONDS)
        client.ping()
        client.close()
    except Exception as exc:
        return Check("error", f"Redis unreachable: {exc}; check REDIS_URL", {"backend": backend})
    return Check("ok", "Redis channel layer connected", {"backend": backend})


def check_model_dir() -> Check:
    path = settings.GROUPWISE_MODEL_DIR
    if path is None:
        return Check("ok", "built-in tiny model", {"path": None})
    if not path.is_dir():
        return Check(
            "error",
            f"GROUPWISE_MODEL_DIR={path} is not a directory: point it at a local model directory "
            "or unset it for the built-in tiny model",
            {"path": str(path)},
        )
    return Check("ok", f"model directory {path}", {"path": str(path)})


def collect() -> dict[str, Any]:
    """Every check, and an overall status: ``error`` if the database or broker fails, else
    ``degraded`` if any other check fails, else ``ok``."""
    database = check_database()
    checks = {
        "database": database,
        "broker": check_broker(),
        "workers": (
            check_workers()
            if database.status == "ok"
            else Check("error", "unknown: the database is unreachable")
        ),
        "channel_layer": check_channel_layer(),
        "model": check_model_dir(),
    }
    failed = {name for name, check in checks.items() if check.status == "error"}
    overall = "error" if failed & {"database", "broker"} else "degraded" if failed else "ok"
    return {
        "status": overall,
        "time": timezone.now().isoformat(),
        "checks": {name: asdict(check) for name, check in checks.items()},
    }


def collect_for(viewer: Any) -> dict[str, Any]:
    """``collect()`` as ``viewer`` may see it: a worker's ``current_run_id`` is kept only when
    the viewer may see that run (others see ``training`` alone, as the queue hides their runs)."""
    report = collect()
    workers = report["checks"]["workers"]["details"].get("workers", [])
    ids = {w["current_run_id"] for w in workers if w["current_run_id"] is not None}
    shown: set[int] = set()
    if ids:
        for _receiver, answer in visible_run_ids.send(
            sender=collect_for, viewer=viewer, run_ids=ids
        ):
            # django-stubs type a receiver's answer as str; ours answer a set of run ids.
            shown |= cast("set[int]", answer)
    for worker in workers:
        if worker["current_run_id"] not in shown:
            worker["current_run_id"] = None
    return report
