"""The training task: thin, by id; the engine's loop does the work.

A run is claimed with a conditional update (queued -> running), so a second delivery of the same
message does nothing. Cancellation is cooperative: the loop asks ``should_stop`` between phases,
and it answers ``cancelled`` once a user asked to cancel, ``interrupted`` once the worker is
shutting down (Ctrl-C, SIGTERM), so the run can resume from its last checkpoint.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from engine.recipe import Recipe
from webapp.core import heartbeat
from webapp.runs.models import Run
from webapp.runs.reproducibility import reproducibility_record
from webapp.runs.sink import RunSink

logger = logging.getLogger(__name__)


def run_dir(run_id: int) -> Path:
    """Where a run's checkpoints and engine files live."""
    return Path(settings.GROUPWISE_RUNS_DIR) / str(run_id)


@shared_task(name="runs.train_run")
def train_run(run_id: int) -> str:
    """Train run ``run_id`` if it is still queued; returns the status it ended with."""
    claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING,
        started_at=timezone.now(),
        worker=f"{socket.gethostname()}",
        attempts=F("attempts") + 1,
        reproducibility=reproducibility_record(),
    )
    if not claimed:
        logger.info("run %s is not queued any more: nothing to do", run_id)
        return "skipped"
    run = Run.objects.get(pk=run_id)

    def should_stop() -> str | None:
        if heartbeat.stop_requested.is_set():
            return "interrupted"
        if Run.objects.filter(pk=run_id, status=Run.Status.CANCELLING).exists():
            return "cancelled"
        return None

    from engine.loop import run as run_loop

    heartbeat.set_current_run(run_id)
    sink = RunSink(run)
    status, error = Run.Status.FAILED, ""
    try:
        ended = run_loop(
            Recipe.from_dict(run.recipe),
            sink,
            should_stop,
            out_dir=run_dir(run_id),
            model_dir=settings.GROUPWISE_MODEL_DIR,
        )
        status, error = Run.Status(ended.status), ended.error or ""
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            sink.close()
        except Exception as exc:
            logger.exception("run %s: storing its events failed", run_id)
            status, error = Run.Status.FAILED, f"storing events failed: {exc}"
        heartbeat.set_current_run(None)
    Run.objects.filter(pk=run_id).update(status=status, error=error, finished_at=timezone.now())
    return str(status)
