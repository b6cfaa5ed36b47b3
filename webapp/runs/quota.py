"""Creation rate limits: at most N runs (``GROUPWISE_RUN_CREATE_LIMIT``) or sweeps
(``GROUPWISE_SWEEP_CREATE_LIMIT``) per user per period.

Counted from the rows' own ``created_at``, so a limit holds across web processes and restarts
with no cache to share. The creating service checks it inside the transaction that creates the
row, after locking the user's row, so two requests from one user cannot both take the last slot.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from webapp.env import Rate
from webapp.runs.models import Run


class RateLimited(Exception):
    """The user created too many of something lately; ``retry_after`` is in whole seconds
    (>= 1)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_run_quota(user: Any) -> None:
    """Raise ``RateLimited`` when ``user`` has used up the period's runs; return otherwise."""
    check_creation_rate(
        Run.objects.filter(owner=user),
        settings.GROUPWISE_RUN_CREATE_LIMIT,
        noun="runs",
        setting="GROUPWISE_RUN_CREATE_LIMIT",
    )


def check_creation_rate(rows: QuerySet[Any], rate: Rate | None, *, noun: str, setting: str) -> None:
    """Raise ``RateLimited`` when ``rows`` (one user's, with ``created_at``) hold ``rate.count``
    created within the last period; ``rate`` None is no limit."""
    if rate is None:
        return
    now = timezone.now()
    period = timedelta(seconds=rate.seconds)
    recent = list(
        rows.filter(created_at__gt=now - period)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) < rate.count:
        return
    # One more fits once all but rate.count - 1 of the recent ones have aged out.
    frees_at = recent[len(recent) - rate.count] + period
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise RateLimited(
        f"{len(recent)} {noun} created in the last {_period(rate.seconds)}: the limit is "
        f"{rate.count} ({setting}={rate.text}); try again in {retry_after} s.",
        retry_after,
    )


def _period(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"
