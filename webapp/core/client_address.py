"""The address a request came from, as far as this server can tell.

``REMOTE_ADDR`` is the peer of the connection. Behind a reverse proxy that is the proxy, and the
client's address is the last entry of ``X-Forwarded-For`` (the one the proxy appended; entries
before it are whatever the client sent). That header is read only when
``GROUPWISE_TRUST_X_FORWARDED_FOR`` says a proxy sets it: otherwise any client could name any
address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from django.conf import settings


def client_address(meta: Mapping[str, Any]) -> str:
    """The client's IP address from a request's ``META``, normalised; '' when there is none
    (a Unix socket peer, a malformed header)."""
    raw = str(meta.get("REMOTE_ADDR") or "")
    if settings.GROUPWISE_TRUST_X_FORWARDED_FOR:
        forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "")
        if forwarded.strip():
            raw = forwarded.rsplit(",", 1)[-1]
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        return ""
