"""Waiting for what another process or thread does: the suite's one poll loop, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous: the suite must hold on a loaded 2-core machine, where a worker, server or rank that
#: is merely slow must not fail a test. A test waiting on a whole training run passes more.
TIMEOUT_SECONDS = 120.0
#: How often the condition is asked: often enough not to slow a test down, seldom enough that
#: the asking (a database query, a file read) does not load the machine it waits on.
INTERVAL_SECONDS = 0.1


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = TIMEOUT_SECONDS,
    *,
    what: str = "the condition",
    interval: float = INTERVAL_SECONDS,
    context: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` until it returns a truthy value, and return that value.

    ``condition`` is called at once, then every ``interval`` seconds. An exception it raises (a
    process it watches has exited, a check that must hold throughout failed) propagates at once.
    When ``timeout`` seconds pass without a truthy value, raises ``TimeoutError`` naming ``what``
    was waited for, the last value observed and, when given, ``context()`` (a server's or
    worker's log, read only then).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f":\n{context()}" if context is not None else ""
            raise TimeoutError(
                f"timed out after {timeout:g} s waiting for {what} "
                f"(last observed: {value!r}){detail}"
            )
        time.sleep(interval)
