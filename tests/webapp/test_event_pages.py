"""Event pages sent as stored: the API's and the socket's pages hold each payload's stored JSON
as it is, never decoded and encoded again, with the fields the serializer would give."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from tests.webapp.personas import client_for, make_run
from webapp.routing import websocket_urlpatterns
from webapp.runs.models import Event, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.production]

#: Strict JSON as the sink stores it: non-finite floats as text, any character, nesting.
PAYLOAD = {
    "step": 3,
    "loss": "NaN",
    "kl": "-Infinity",
    "prompt": 'a "quoted" sign saying \u00e9t\u00e9 \U0001f600',
    "groups": [{"rewards": [0.5, 1e-300], "seeds": [1, 2]}],
}
WHEN = dt.datetime(2026, 12, 3, 14, 5, 6, 789000, tzinfo=dt.UTC)


def _run_with_events(owner: Any) -> Run:
    run = make_run(owner, status=Run.Status.RUNNING)
    Event.objects.create(run=run, seq=1, type="log_line", step=None, payload={"m": 1}, time=WHEN)
    Event.objects.create(run=run, seq=2, type="train_step_finished", step=3, payload=PAYLOAD,
                         time=WHEN)  # fmt: skip
    Event.objects.create(run=run, seq=3, type="rollout_finished", step=4, payload={}, time=WHEN,
                         superseded=True)  # fmt: skip
    return run


@pytest.fixture
def payloads_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a stored payload back into Python objects fails: pages must not need it."""

    def refuse(value: Any, expression: Any, connection: Any) -> Any:
        raise AssertionError("a stored payload was decoded")

    # On the payload field alone: the run's own JSON fields are read as usual.
    monkeypatch.setattr(Event._meta.get_field("payload"), "from_db_value", refuse, raising=False)


def test_the_api_page_holds_the_payloads_as_stored(
    owner: Any, payloads_never_decoded: None
) -> None:
    run = _run_with_events(owner)
    response = client_for(owner).get(f"/api/runs/{run.pk}/events/?superseded=1")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    page = json.loads(response.content)
    assert page["more"] is False
    assert page["results"] == [
        {"seq": 1, "type": "log_line", "step": None, "time": "2026-12-03T14:05:06.789000Z",
         "superseded": False, "payload": {"m": 1}},
        {"seq": 2, "type": "train_step_finished", "step": 3,
         "time": "2026-12-03T14:05:06.789000Z", "superseded": False, "payload": PAYLOAD},
        {"seq": 3, "type": "rollout_finished", "step": 4, "time": "2026-12-03T14:05:06.789000Z",
         "superseded": True, "payload": {}},
    ]  # fmt: skip


def test_the_api_pages_through_a_long_run(owner: Any) -> None:
    run = make_run(owner)
    Event.objects.bulk_create(
        Event(run=run, seq=seq, type="log_line", payload={"n": seq}, time=WHEN)
        for seq in range(1, 1202)
    )
    client, after, seen = client_for(owner), 0, []
    while True:
        page = client.get(f"/api/runs/{run.pk}/events/?after={after}").json()
        seen += [(e["seq"], e["payload"]["n"]) for e in page["results"]]
        if not page["more"]:
            break
        after = page["results"][-1]["seq"]
    assert seen == [(seq, seq) for seq in range(1, 1202)]


async def test_the_socket_backlog_holds_the_payloads_as_stored(
    owner: Any, payloads_never_decoded: None
) -> None:
    run = await database_sync_to_async(_run_with_events)(owner)
    socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/")
    socket.scope["user"] = owner
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "subscribe", "after": 0})
    backlog = await socket.receive_json_from(timeout=10)
    assert backlog["type"] == "events"
    assert backlog["events"] == [
        {"seq": 1, "type": "log_line", "step": None, "payload": {"m": 1}},
        {"seq": 2, "type": "train_step_finished", "step": 3, "payload": PAYLOAD},
    ]
    assert backlog["run"]["status"] == "running"
    await socket.disconnect()
