"""How a socket ended up: accepted and open, or accepted and closed with a code.

A refused socket must be accepted first and then closed (``webapp.core.consumers.refuse``): a
socket closed at the handshake reaches the browser as code 1006, whatever the server meant.
"""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

OPEN = 101


async def outcome(communicator: WebsocketCommunicator) -> int:
    """``OPEN`` when the socket is accepted and answers a subscribe, else its close code.

    Fails when the handshake itself is refused. Every socket answers a subscribe (the run socket
    with its events, the status socket with its first report regardless), so an open socket is
    told from a closed one by what comes back, not by waiting for nothing.
    """
    connected, code = await communicator.connect(timeout=10)
    assert connected, f"refused at the handshake (code {code}): a browser would see 1006"
    await communicator.send_json_to({"type": "subscribe", "after": 0})
    message = await communicator.receive_output(timeout=10)
    if message["type"] == "websocket.close":
        return int(message["code"])
    return OPEN
