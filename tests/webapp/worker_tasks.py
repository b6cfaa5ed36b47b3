"""Tasks only the test workers load (``--include``), to exercise cooperative shutdown."""

from __future__ import annotations

from pathlib import Path

from celery import shared_task

from webapp.core.heartbeat import stop_requested


@shared_task(name="tests.wait_for_stop")
def wait_for_stop(started_marker: str, limit_seconds: float) -> str:
    """Announce the start through a file, then wait for the worker's stop request, like a
    training loop checking between steps. Returns ``stopped`` or ``limit``."""
    Path(started_marker).write_text("started")
    return "stopped" if stop_requested.wait(limit_seconds) else "limit"
