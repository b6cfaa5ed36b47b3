"""Settings that only show their worth under load or over time, checked directly."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer
from channels_redis.utils import create_pool
from django.core.exceptions import ImproperlyConfigured

import webapp.settings


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


def _settings_with(monkeypatch: Any, **env: str) -> Any:
    """The settings module as a process with ``env`` reads it; the caller restores it."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return importlib.reload(webapp.settings)


@pytest.fixture
def reload_settings(monkeypatch: Any) -> Iterator[Any]:
    yield lambda **env: _settings_with(monkeypatch, **env)
    monkeypatch.undo()
    importlib.reload(webapp.settings)


def test_postgresql_connections_come_from_a_pool_per_process(reload_settings: Any) -> None:
    """Under ASGI each request runs in a thread of its own; connections kept in those threads
    piled up past max_connections under load, so requests borrow from a per-process pool."""
    s = reload_settings(DATABASE_URL="postgres://u@h:5432/d")
    db = s.DATABASES["default"]
    assert db["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 8}
    assert db["CONN_MAX_AGE"] == 0


def test_postgresql_without_a_pool_keeps_connections_as_told(reload_settings: Any) -> None:
    s = reload_settings(
        DATABASE_URL="postgres://u@h:5432/d", DATABASE_POOL_SIZE="0", DATABASE_CONN_MAX_AGE="60"
    )
    db = s.DATABASES["default"]
    assert "pool" not in db["OPTIONS"]
    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (60, True)


@pytest.mark.parametrize(
    ("cpus", "web_workers", "torch_threads"),
    # One process per core up to 8; every core but one for torch, at least one.
    [(1, 1, 1), (2, 2, 1), (12, 8, 11)],
)
def test_cores_give_the_defaults(
    monkeypatch: Any, reload_settings: Any, cpus: int, web_workers: int, torch_threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.delenv("GROUPWISE_WEB_WORKERS", raising=False)
    monkeypatch.delenv("GROUPWISE_WORKER_TORCH_THREADS", raising=False)
    s = reload_settings()
    assert web_workers == s.GROUPWISE_WEB_WORKERS
    assert torch_threads == s.GROUPWISE_WORKER_TORCH_THREADS


def test_variables_override_the_core_rules(reload_settings: Any) -> None:
    s = reload_settings(GROUPWISE_WEB_WORKERS="3", GROUPWISE_WORKER_TORCH_THREADS="5")
    assert (s.GROUPWISE_WEB_WORKERS, s.GROUPWISE_WORKER_TORCH_THREADS) == (3, 5)
    with pytest.raises(ImproperlyConfigured, match="GROUPWISE_WEB_WORKERS=0 is below its minimum"):
        reload_settings(GROUPWISE_WEB_WORKERS="0")
