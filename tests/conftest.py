"""Suite-wide fixtures: external services (skipped visibly outside CI, failures under CI=true)."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

# The suite's own rollout servers, reward servers and webhook listeners listen on 127.0.0.1; the
# egress policy (engine.net.egress) refuses loopback unless listed, as an administrator would list a
# cluster's addresses. Tests of the refusals set their own policy; 127.0.0.2 and the rest of the
# loopback range stay refused here. Set before Django and any subprocess (workers inherit it).
os.environ["GROUPWISE_EGRESS_ALLOW"] = "127.0.0.1"


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens."""
    parts = urlsplit(url)
    default_ports = {"redis": 6379, "amqp": 5672, "postgres": 5432, "postgresql": 5432}
    port = parts.port or default_ports.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip the test with a visible reason when the service is down; fail instead under CI."""
    if reachable(url):
        return
    message = f"{name} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: every service must be up)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Personas are created in most web tests; PBKDF2's deliberate slowness buys nothing here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """Close connections after each use in tests: a persistent one left in a worker thread
    (sockets run their queries off the event loop) would stop PostgreSQL from dropping the test
    database at the end."""
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


def pytest_sessionstart(session: pytest.Session) -> None:
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url.startswith("postgres") and not reachable(database_url):
        message = (
            f"PostgreSQL is not reachable at {database_url}: the production profile is skipped"
        )
        if IN_CI:
            pytest.exit(f"{message} (CI=true: every service must be up)", returncode=1)
        pytest.exit(message, returncode=0)
