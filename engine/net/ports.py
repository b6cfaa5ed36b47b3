"""A free TCP port for a server this process is about to start (a rank group, a rollout server)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (an IPv4 address) that nothing listened on when it was asked.

    The operating system picks it (a bind to port 0) and the probe socket is closed before
    returning, so the port is free to bind but not reserved: another process could take it in
    between, which the callers, starting their server at once, accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
