"""The status socket with WebsocketCommunicator: anonymous refused, a logged-in user served."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User

from webapp.core.consumers import CLOSE_UNAUTHENTICATED, StatusConsumer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.production]


def _communicator(user: User | AnonymousUser) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/")
    communicator.scope["user"] = user
    return communicator


async def test_anonymous_socket_is_closed_before_any_data() -> None:
    # Accepted, then closed with the code (a browser sees 4401, not a failed handshake); a
    # refresh sent before the close arrived is never answered.
    communicator = _communicator(AnonymousUser())
    assert await communicator.connect() == (True, None)
    await communicator.send_json_to({"type": "refresh"})
    assert await communicator.receive_output(timeout=10) == {
        "type": "websocket.close",
        "code": CLOSE_UNAUTHENTICATED,
    }
    assert await communicator.receive_nothing()


async def test_the_socket_names_a_workers_run_only_to_its_owner(
    django_user_model: type[User],
) -> None:
    from channels.db import database_sync_to_async
    from django.utils import timezone

    from tests.webapp.personas import make_run
    from webapp.core.models import WorkerHeartbeat

    owner = await django_user_model.objects.acreate(username="owner")
    other = await django_user_model.objects.acreate(username="other")
    run = await database_sync_to_async(make_run)(owner, status="running")
    now = timezone.now()
    await WorkerHeartbeat.objects.acreate(
        name="gpu@h", host="h", pid=1, queues=["gpu"], current_run_id=run.pk,
        started_at=now, last_seen=now,
    )  # fmt: skip
    seen = {}
    for user in (owner, other):
        communicator = _communicator(user)
        assert (await communicator.connect())[0]
        report = (await communicator.receive_json_from(timeout=10))["report"]
        [worker] = report["checks"]["workers"]["details"]["workers"]
        seen[user.username] = (worker["training"], worker["current_run_id"])
        await communicator.disconnect()
    assert seen == {"owner": (True, run.pk), "other": (True, None)}


async def test_logged_in_socket_receives_status_and_refreshes(
    django_user_model: type[User],
) -> None:
    user = await django_user_model.objects.acreate(username="owner")
    communicator = _communicator(user)
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=10)
    assert first["type"] == "status"
    assert set(first["report"]["checks"]) == {
        "database",
        "broker",
        "workers",
        "channel_layer",
        "model",
    }
    assert first["report"]["checks"]["database"]["status"] == "ok"
    await communicator.send_json_to({"type": "refresh"})
    second = await communicator.receive_json_from(timeout=10)
    assert second["type"] == "status"
    await communicator.disconnect()


async def test_channel_layer_delivers_group_messages(settings) -> None:
    """Redis groups under the production profile, the in-process layer on the embedded one."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    expected = "RedisChannelLayer" if settings.REDIS_URL else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected
    channel = await layer.new_channel()
    await layer.group_add("run-test", channel)
    await layer.group_send("run-test", {"type": "event.new", "seq": 7})
    assert await layer.receive(channel) == {"type": "event.new", "seq": 7}
    await layer.group_discard("run-test", channel)
