"""The status socket: pushes the deployment's health to logged-in browsers."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.core import status

PUSH_SECONDS = 5.0
CLOSE_UNAUTHENTICATED = 4401


async def refuse(consumer: AsyncJsonWebsocketConsumer, code: int) -> NoReturn:
    """Accept the socket, close it with ``code`` before sending anything, and end the consumer.

    Closing before accepting answers the handshake with HTTP 403: the browser then reports close
    code 1006 whatever the code, and a page cannot tell "not allowed" (stop) from "server gone"
    (reconnect). Accepted first, the close frame carries the code to the page. The consumer then
    stops, so whatever the client sent before it saw the close is never answered.
    """
    await consumer.accept()
    await consumer.close(code=code)
    raise StopConsumer


class StatusConsumer(AsyncJsonWebsocketConsumer):
    """Sends ``{"type": "status", "report": …}`` on connect and every ``PUSH_SECONDS``.

    Anonymous sockets are closed with code 4401 before they see anything. Workers' current run
    ids are shown only to those who may see the run (``status.collect_for``).
    """

    _pusher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await refuse(self, CLOSE_UNAUTHENTICATED)
        await self.accept()
        self._pusher = asyncio.create_task(self._push_forever())

    async def disconnect(self, code: int) -> None:
        if self._pusher is not None:
            self._pusher.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self._push_once()

    async def _push_once(self) -> None:
        report = await database_sync_to_async(status.collect_for)(self.scope["user"])
        await self.send_json({"type": "status", "report": report})

    async def _push_forever(self) -> None:
        while True:
            await self._push_once()
            await asyncio.sleep(PUSH_SECONDS)


#: Close code for a socket path no consumer serves (as HTTP's 404).
CLOSE_UNKNOWN_PATH = 4404


class UnknownPathConsumer(AsyncJsonWebsocketConsumer):
    """Every socket path no other route matches: refused cleanly, never an error in the server
    (Channels' router raises for an unmatched path, which servers report as a 500)."""

    async def connect(self) -> None:
        await refuse(self, CLOSE_UNKNOWN_PATH)
