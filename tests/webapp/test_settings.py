"""Settings that only show their worth under load or over time, checked directly."""

from __future__ import annotations

import importlib
from typing import Any

from channels_redis.core import RedisChannelLayer
from channels_redis.utils import create_pool
from django.conf import settings

import webapp.settings
from webapp.env import database_from_url


def test_redis_socket_timeout_outlasts_the_consumers_blocking_pop(monkeypatch: Any) -> None:
    """redis-py 8 times reads out after 5 s by default, exactly the blocking pop a consumer
    waits in, so idle sockets were closed every 5 s (bench/load.py counted them)."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    # The settings module as a process with REDIS_URL set reads it (Django's own settings
    # object keeps the values it was configured with).
    reloaded = importlib.reload(webapp.settings)
    try:
        (host,) = reloaded.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
        pool = create_pool(host)
        assert pool.connection_kwargs["socket_timeout"] > RedisChannelLayer.brpop_timeout
        assert pool.connection_kwargs["db"] == 3
    finally:
        monkeypatch.undo()
        importlib.reload(webapp.settings)


def test_postgresql_connections_are_per_request() -> None:
    """Under ASGI each request runs in a thread of its own; persistent connections piled up in
    those threads past max_connections under load."""
    db = database_from_url("X", "postgres://u@h:5432/d", base=settings.BASE_DIR)
    assert db["CONN_MAX_AGE"] == 0
