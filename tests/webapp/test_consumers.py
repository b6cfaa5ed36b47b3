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
    communicator = _communicator(AnonymousUser())
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    assert await communicator.receive_nothing()


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
