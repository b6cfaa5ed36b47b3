"""The run-creation rate limit: at most N runs per user per period (``GROUPWISE_RUN_CREATE_LIMIT``).

Counted from the ``Run`` table, so it holds across web processes and restarts with no cache to
share. ``services.create_run`` checks it inside the transaction that creates the run, after
locking the user's row, so two requests from one user cannot both take the last slot.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from webapp.runs.models import Run


class RateLimited(Exception):
    """The user created too many runs lately; ``retry_after`` is in whole seconds (>= 1)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_run_quota(user: Any) -> None:
    """Raise ``RateLimited`` when ``user`` has used up the period's runs; return otherwise."""
    rate = settings.GROUPWISE_RUN_CREATE_LIMIT
    if rate is None:
        return
    now = timezone.now()
    period = timedelta(seconds=rate.seconds)
    recent = list(
        Run.objects.filter(owner=user, created_at__gt=now - period)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) < rate.count:
        return
    # One more run fits once all but rate.count - 1 of the recent ones have aged out.
    frees_at = recent[len(recent) - rate.count] + period
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise RateLimited(
        f"{len(recent)} runs created in the last {_period(rate.seconds)}: the limit is "
        f"{rate.count} (GROUPWISE_RUN_CREATE_LIMIT={rate.text}); try again in {retry_after} s.",
        retry_after,
    )


def _period(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"
