"""The run socket: a run's stored events after a given sequence number, then live ones.

The client sends ``{"type": "subscribe", "after": <last seq it saw>}`` and receives
``{"type": "events", "events": [...], "run": {...}}`` batches, in order, without gaps: the
database is the record and every batch is read from it. New events are announced on the run's
channel-layer group, by the worker's sink through Redis, or, on the embedded default (an
in-process layer that cannot cross processes), by one ``EventFollower`` per web process that polls
the event table for every watched run in a single query.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Max

from webapp.core.consumers import refuse
from webapp.runs.event_pages import EventPage, event_page
from webapp.runs.models import MAX_ID, Event, Run
from webapp.runs.sink import RUN_STATE, run_group

logger = logging.getLogger(__name__)

BATCH = 500
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
#: How often the embedded follower looks for new events (one query for all watched runs).
FOLLOW_SECONDS = 0.1


class RunConsumer(AsyncJsonWebsocketConsumer):
    """One browser watching one run."""

    run_id: int
    after: int | None = None
    #: Whether this socket joined its run's group, and whether the embedded follower counts it.
    joined = False
    watching = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await refuse(self, CLOSE_UNAUTHENTICATED)
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        # An id past the database's integers names no run (and would fail the query).
        if self.run_id > MAX_ID or not await _visible(self.run_id, user):
            await refuse(self, CLOSE_NOT_FOUND)
        await self.channel_layer.group_add(run_group(self.run_id), self.channel_name)
        self.joined = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(run_group(self.run_id), self.channel_name)
        # Only a socket the follower counted may take itself off: another socket's watch of the
        # same run must go on.
        if self.watching:
            FOLLOWER.unwatch(self.run_id)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "subscribe":
            await self.send_json(
                {"type": "error", "message": 'send {"type": "subscribe", "after": N}'}
            )
            return
        try:
            after = int(content.get("after") or 0)
            # Past the database's integers no event has that sequence number.
            valid = abs(after) <= MAX_ID
        except (TypeError, ValueError):
            valid = False
        if not valid:
            await self.send_json({"type": "error", "message": "after must be a sequence number"})
            return
        first = self.after is None
        self.after = max(after, 0)
        await self._send_new()
        if first and not settings.REDIS_URL:
            FOLLOWER.watch(self.run_id, self.after)
            self.watching = True

    async def run_event(self, message: dict[str, Any]) -> None:
        """New events were stored. Those that follow on from what this socket has seen are sent
        as they came; after a gap, everything after the last seen is read from the database."""
        if self.after is None or message.get("seq", 0) <= self.after:
            return
        events = message.get("events") or []
        if events and events[0]["seq"] == self.after + 1:
            self.after = events[-1]["seq"]
            await self.send_json({"type": "events", "events": events, "run": message.get("run")})
        else:
            await self._send_new()

    async def _send_new(self) -> None:
        assert self.after is not None
        while True:
            page, run = await _events_after(self.run_id, self.after)
            if page.last_seq is not None:
                self.after = page.last_seq
            # The stored payloads go out as stored (``event_pages``): the message is text.
            await self.send(
                text_data=f'{{"type": "events", "events": {page.json}, "run": {json.dumps(run)}}}'
            )
            if page.size < BATCH:
                return


@database_sync_to_async
def _visible(run_id: int, user: Any) -> bool:
    return Run.objects.visible_to(user).filter(pk=run_id).exists()


@database_sync_to_async
def _events_after(run_id: int, after: int) -> tuple[EventPage, dict[str, Any]]:
    rows = Event.objects.filter(run_id=run_id, seq__gt=after, superseded=False)
    page, _more = event_page(rows, BATCH, full=False)
    run = Run.objects.values(*RUN_STATE).get(pk=run_id)
    return page, dict(run)


class EventFollower:
    """Polls the event table for the runs this process's sockets watch, in one query per tick,
    and announces new events on each run's group (embedded default only)."""

    def __init__(self) -> None:
        self.watched: dict[int, int] = {}
        self.watchers: dict[int, int] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, run_id: int, seq: int) -> None:
        self.watchers[run_id] = self.watchers.get(run_id, 0) + 1
        self.watched[run_id] = max(self.watched.get(run_id, 0), seq)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._follow())

    def unwatch(self, run_id: int) -> None:
        if run_id not in self.watchers:
            return
        self.watchers[run_id] -= 1
        if self.watchers[run_id] <= 0:
            del self.watchers[run_id]
            self.watched.pop(run_id, None)

    async def _follow(self) -> None:
        layer = get_channel_layer()
        while self.watched:
            try:
                latest = await _latest_seqs(list(self.watched))
                for run_id, seq in latest.items():
                    if run_id in self.watched and seq > self.watched[run_id]:
                        # One read for every socket of this process watching the run; only
                        # the events since the last tick, which the message carries decoded.
                        page, run = await _events_after(run_id, self.watched[run_id])
                        events = json.loads(page.json)
                        self.watched[run_id] = seq
                        await layer.group_send(
                            run_group(run_id),
                            {"type": "run.event", "seq": seq, "events": events, "run": run},
                        )
            except Exception:
                logger.exception("event follower tick failed; retrying")
            await asyncio.sleep(FOLLOW_SECONDS)


@database_sync_to_async
def _latest_seqs(run_ids: list[int]) -> dict[int, int]:
    rows = Event.objects.filter(run_id__in=run_ids).values("run_id").annotate(last=Max("seq"))
    return {row["run_id"]: row["last"] for row in rows}


FOLLOWER = EventFollower()
