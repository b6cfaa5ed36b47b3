"""Small tasks that prove a worker is consuming; training tasks live with the runs."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import shared_task


@shared_task(name="core.ping")
def ping() -> dict[str, Any]:
    """Answer with the worker's host and pid (the home page's "Ping a worker" button)."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}
