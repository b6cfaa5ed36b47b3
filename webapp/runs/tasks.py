"""The training task: thin, by id; the engine's loop does the work.

A run is claimed with a conditional update (queued -> running), so a second delivery of the same
message does nothing; a run the owner's concurrent-run limit holds back stays queued and is
offered again later (``webapp.runs.queue``). Cancellation is cooperative: the loop asks
``should_stop`` between phases, and it answers ``cancelled`` once a user asked to cancel,
``interrupted`` once the worker is shutting down (Ctrl-C, SIGTERM), so the run can resume from
its last checkpoint. A recipe with ``num_gpus`` > 1 trains in that many rank subprocesses of
this task (``engine.run.ranks.train``: rank 0's events come back here to the sink, a stop is passed
on, and the ranks die with the worker). Once a run stopped, ``after_run`` measures its disk use,
offers the owner's next held run and sends the notifications.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from engine.recipe import Recipe
from webapp.core import heartbeat
from webapp.runs import housekeeping, queue
from webapp.runs.models import Run
from webapp.runs.sink import RunSink

logger = logging.getLogger(__name__)


def run_dir(run_id: int) -> Path:
    """Where a run's checkpoints and engine files live."""
    return Path(settings.GROUPWISE_RUNS_DIR) / str(run_id)


@shared_task(name="runs.train_run")
def train_run(run_id: int) -> str:
    """Train run ``run_id`` if it is still queued; returns the status it ended with."""
    claim = queue.claim_run(run_id)
    if claim == "held":
        logger.info("run %s waits for its owner's running runs (per-user limit)", run_id)
        train_run.apply_async((run_id,), countdown=settings.GROUPWISE_LIMIT_RETRY_SECONDS)
        return "held"
    if claim == "not_queued":
        logger.info("run %s is not queued any more: nothing to do", run_id)
        return "skipped"
    run = Run.objects.get(pk=run_id)

    def should_stop() -> str | None:
        if heartbeat.stop_requested.is_set():
            return "interrupted"
        if Run.objects.filter(pk=run_id, status=Run.Status.CANCELLING).exists():
            return "cancelled"
        return None

    from engine.run.ranks import train

    heartbeat.set_current_run(run_id)
    sink = RunSink(run)
    status, error = Run.Status.FAILED, ""
    try:
        ended = train(
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
    after_run(run_id)
    return str(status)


def after_run(run_id: int) -> None:
    """Once a run stopped: measure its disk use, offer the owner's next held run, notify."""
    try:
        housekeeping.measure_disk(run_id)
    except OSError:
        logger.exception("run %s: measuring its disk use failed", run_id)
    run = Run.objects.get(pk=run_id)
    if settings.GROUPWISE_MAX_RUNNING_PER_USER:
        waiting = queue.next_held_run(run.owner_id)
        if waiting is not None:
            train_run.delay(waiting)
    if run.notify_email or run.webhook_url:
        notify_run.delay(run_id)


@shared_task(name="runs.notify_run")
def notify_run(run_id: int) -> int:
    """Send the run's end-of-run notifications; the number delivered."""
    from webapp.runs.notifications import notify_run_ended

    return sum(row.delivered for row in notify_run_ended(run_id))
