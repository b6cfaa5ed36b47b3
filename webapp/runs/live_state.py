"""A run's current state, what its page draws first: the page opens from this and the metric
series, then follows the run's socket from ``last_seq``, never replaying the run's history.

Each part is one indexed lookup, whatever the run's length: the latest rollout is found through
its chart point and read by primary key, the payloads go out as stored (``event_pages``' way:
their JSON text spliced in, never decoded and encoded again).
"""

from __future__ import annotations

import json

from django.db.models import Max, QuerySet

from webapp.runs.event_pages import stored_payload
from webapp.runs.models import ChartPoint, Event, Run
from webapp.runs.sink import RUN_STATE

#: How many of the latest log lines (and run endings) the page lists.
LOG_LINES = 50


def run_state(run: Run) -> str:
    """The JSON text of ``run``'s current state.

    ``run``: the fields a socket message carries (``sink.RUN_STATE``); ``last_seq``: the last
    stored event's seq (0 for none), to subscribe after; ``rollout``: the latest live rollout's
    payload (its prompt groups), ``evaluation`` the latest evaluation's, ``health`` the latest
    health report's (each null when there is none); ``evaluations``: every live evaluation's
    step, in order; ``logs``: the last ``LOG_LINES`` log lines and run endings as
    ``{seq, type, payload}``, oldest first.
    """
    events = Event.objects.filter(run=run)
    last_seq = events.aggregate(last=Max("seq"))["last"] or 0
    live_points = ChartPoint.objects.filter(run=run, superseded=False)
    evaluations = list(
        live_points.filter(series="evaluation").order_by("step").values_list("step", flat=True)
    )
    logs = (
        events.filter(type__in=("log_line", "run_ended"))
        .order_by("-seq")
        .annotate(stored=stored_payload())
        .values_list("seq", "type", "stored")[:LOG_LINES]
    )
    log_items = [
        f'{{"seq": {seq}, "type": {json.dumps(kind)}, "payload": {stored}}}'
        for seq, kind, stored in reversed(list(logs))
    ]
    health = events.filter(type="health", superseded=False).order_by("-step", "-seq")
    parts = {
        "run": json.dumps({field: getattr(run, field) for field in RUN_STATE}),
        "last_seq": str(last_seq),
        "rollout": _latest(live_points.filter(series="reward")),
        "evaluation": _latest(live_points.filter(series="evaluation")),
        "evaluations": json.dumps(evaluations),
        "health": _first_stored(health),
        "logs": "[" + ", ".join(log_items) + "]",
    }
    return "{" + ", ".join(f"{json.dumps(key)}: {text}" for key, text in parts.items()) + "}"


def _latest(points: QuerySet[ChartPoint]) -> str:
    """The stored payload of the event behind the latest of ``points``, or ``null``."""
    event_id = points.order_by("-step", "-id").values_list("event_id", flat=True).first()
    return "null" if event_id is None else _first_stored(Event.objects.filter(pk=event_id))


def _first_stored(events: QuerySet[Event]) -> str:
    """The first of ``events``' payload as stored, or ``null`` when there is none."""
    text = events.annotate(stored=stored_payload()).values_list("stored", flat=True).first()
    return "null" if text is None else text
