"""The sweep task: thin, by id; ``webapp.sweeps.measuring`` does the work."""

from __future__ import annotations

from celery import shared_task

from webapp.sweeps.measuring import measure_sweep


# The name is from when sweeps were part of the runs app, and stays: messages queued before
# route by it (settings.CELERY_TASK_ROUTES sends it to the gpu queue).
@shared_task(name="runs.run_sweep")
def run_sweep(sweep_id: int) -> str:
    """Measure a microgroup sweep; the status it ended with."""
    return measure_sweep(sweep_id)
