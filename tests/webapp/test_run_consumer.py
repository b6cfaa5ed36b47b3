"""The run socket: backlog after a sequence number, then live events; strangers refused."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from engine.events import LogLine
from tests.webapp.personas import make_run
from tests.webapp.sockets import outcome
from webapp.routing import websocket_urlpatterns
from webapp.runs.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, FOLLOWER
from webapp.runs.models import Event, Run
from webapp.runs.sink import RunSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.production]


def socket(run_id: int, user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run_id}/")
    communicator.scope["user"] = user
    return communicator


@database_sync_to_async
def run_with_events(owner: Any, count: int) -> Run:
    run = make_run(owner, status=Run.Status.RUNNING)
    for seq in range(1, count + 1):
        Event.objects.create(
            run=run,
            seq=seq,
            type="log_line",
            payload={"message": f"line {seq}"},
            time=timezone.now(),
        )
    Event.objects.create(
        run=run,
        seq=count + 1,
        type="rollout_finished",
        step=0,
        payload={},
        time=timezone.now(),
        superseded=True,
    )
    return run


async def test_strangers_are_refused(owner: Any, other: Any) -> None:
    run = await run_with_events(owner, 1)
    # Accepted, then closed with the code: a page sees the code and stops reconnecting. The
    # subscribe the page sends on open gets no events.
    assert await outcome(socket(run.pk, AnonymousUser())) == CLOSE_UNAUTHENTICATED
    assert await outcome(socket(run.pk, other)) == CLOSE_NOT_FOUND
    assert await outcome(socket(run.pk + 100, owner)) == CLOSE_NOT_FOUND
    stranger = socket(run.pk, other)
    await stranger.connect()
    await stranger.send_json_to({"type": "subscribe", "after": 0})
    assert (await stranger.receive_output(timeout=10))["type"] == "websocket.close"
    assert await stranger.receive_nothing(timeout=0.5), "a refused socket sent something"


async def test_backlog_after_seq_then_live_events(owner: Any) -> None:
    run = await run_with_events(owner, 3)
    communicator = socket(run.pk, owner)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "subscribe", "after": 1})
    backlog = await communicator.receive_json_from(timeout=10)
    assert [e["seq"] for e in backlog["events"]] == [2, 3], "superseded seq 4 is not sent"
    assert backlog["run"]["status"] == "running"

    sink = await database_sync_to_async(RunSink)(run)
    await database_sync_to_async(sink)(LogLine(level="info", message="fresh"))
    await database_sync_to_async(sink.close)()
    live = await communicator.receive_json_from(timeout=10)
    assert [(e["seq"], e["payload"]["message"]) for e in live["events"]] == [(5, "fresh")]
    await communicator.disconnect()


async def test_bad_messages_get_an_error(owner: Any) -> None:
    run = await run_with_events(owner, 1)
    communicator = socket(run.pk, owner)
    await communicator.connect()
    await communicator.send_json_to({"type": "hello"})
    assert (await communicator.receive_json_from(timeout=30))["type"] == "error"
    await communicator.send_json_to({"type": "subscribe", "after": "x"})
    assert "sequence number" in (await communicator.receive_json_from(timeout=30))["message"]
    await communicator.disconnect()


async def test_a_push_after_a_gap_is_filled_from_the_database(owner: Any) -> None:
    from channels.layers import get_channel_layer

    from webapp.runs.sink import run_group

    run = await run_with_events(owner, 3)
    communicator = socket(run.pk, owner)
    await communicator.connect()
    await communicator.send_json_to({"type": "subscribe", "after": 0})
    assert [e["seq"] for e in (await communicator.receive_json_from(timeout=10))["events"]] == [
        1, 2, 3,
    ]  # fmt: skip

    @database_sync_to_async
    def store(seq: int) -> None:
        Event.objects.create(run=run, seq=seq, type="log_line", payload={}, time=timezone.now())

    await store(5)
    await store(6)
    # A push that does not follow on from what the socket saw (5 was never pushed) is not
    # trusted: the socket reads the gap from the database.
    pushed = {"seq": 6, "type": "log_line", "step": None, "payload": {"pushed": True}}
    await get_channel_layer().group_send(
        run_group(run.pk), {"type": "run.event", "seq": 6, "events": [pushed], "run": None}
    )
    batch = await communicator.receive_json_from(timeout=10)
    assert [e["seq"] for e in batch["events"]] == [5, 6]
    assert batch["events"][1]["payload"] == {}, "read from the database, not the push"
    await communicator.disconnect()


async def test_a_socket_that_never_subscribed_leaves_the_others_watch_alone(
    owner: Any, settings: Any
) -> None:
    # The embedded follower (no Redis) polls for the runs its sockets watch.
    settings.REDIS_URL = ""
    run = await run_with_events(owner, 1)
    watcher, passer = socket(run.pk, owner), socket(run.pk, owner)
    assert (await watcher.connect())[0] and (await passer.connect())[0]
    await watcher.send_json_to({"type": "subscribe", "after": 0})
    await watcher.receive_json_from(timeout=10)
    assert FOLLOWER.watchers.get(run.pk) == 1
    await passer.disconnect()
    assert FOLLOWER.watchers.get(run.pk) == 1
    await watcher.disconnect()
    assert run.pk not in FOLLOWER.watchers
