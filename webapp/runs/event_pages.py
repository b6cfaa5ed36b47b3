"""Pages of a run's stored events as JSON text, the payloads sent exactly as they are stored.

A payload is written once, by the sink, as JSON; the events API and the run socket's backlog read
its text (a cast to text in SQL) and splice it into the page, never decoding it into Python objects
to encode it again. A long run's backlog is thousands of payloads: decoding and encoding each was
most of the server's time on ``events/?after=0`` (docs/performance.md).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from rest_framework import serializers

from webapp.runs.models import Event

#: How ``time`` reads in the API, as DRF's own field writes it (ISO 8601).
_TIME = serializers.DateTimeField()


class EventPage(NamedTuple):
    """A page of events: the JSON array's text and the last sequence number in it."""

    #: ``[{...}, ...]``: each event's fields, its payload as stored.
    json: str
    #: How many events the page holds.
    size: int
    #: The last event's seq (None for an empty page).
    last_seq: int | None


def stored_payload() -> Cast:
    """An event's payload as its stored JSON text, for ``annotate``: spliced into a response, it
    is sent without being decoded and encoded again."""
    return Cast("payload", TextField())


def event_page(events: QuerySet[Event], limit: int, *, full: bool) -> tuple[EventPage, bool]:
    """Up to ``limit`` of ``events`` in seq order, and whether more follow.

    ``full``: each event as the API gives it (seq, type, step, time, superseded, payload); else as
    the socket sends it (seq, type, step, payload).
    """
    rows = list(
        events.order_by("seq")
        .annotate(stored=stored_payload())
        .values_list("seq", "type", "step", "time", "superseded", "stored")[: limit + 1]
    )
    more, rows = len(rows) > limit, rows[:limit]
    parts = []
    for seq, kind, step, time, superseded, stored in rows:
        head = f'"seq": {seq}, "type": {json.dumps(kind)}, "step": {json.dumps(step)}'
        if full:
            head += (
                f', "time": {json.dumps(_TIME.to_representation(time))}'
                f', "superseded": {json.dumps(superseded)}'
            )
        parts.append(f'{{{head}, "payload": {stored}}}')
    last = rows[-1][0] if rows else None
    return EventPage("[" + ", ".join(parts) + "]", len(rows), last), more
