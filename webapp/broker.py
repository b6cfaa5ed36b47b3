"""The embedded Celery broker: kombu's SQLAlchemy transport on a SQLite file, polled faster.

kombu's SQLAlchemy transport polls its queue table once a second, which adds up to a second to
every task hand-off. Its polling interval is a class attribute: the transport options cannot set
it, because the channel hands every transport option to ``sqlalchemy.create_engine``, which
rejects unknown keywords. This subclass polls ten times a second (about 110 ms per round trip
measured on a 2-core machine) and is registered under kombu's own ``sqla`` alias, so
``CELERY_BROKER_URL=sqla+sqlite:///...`` picks it up. The transport has no fanout exchange:
``inspect().ping()`` cannot answer on it, which is why liveness comes from worker heartbeats.

Two processes (two workers, or a worker and the web process) starting on a new broker file may
both find its tables or a queue missing and both create them; kombu guards that with a lock inside
one process only, so the second ``CREATE TABLE`` or insert failed and killed a worker at start-up.
This channel looks again instead: the other process created them.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError, OperationalError

POLLING_INTERVAL_SECONDS = 0.1


class Channel(kombu_sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, safe when another process creates its tables or a queue at
    the same time."""

    def _open(self) -> Any:
        try:
            return super()._open()
        except OperationalError as error:
            if "already exists" not in str(error):
                raise
            return super()._open()

    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)  # type: ignore[misc]  # untyped in kombu
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)  # type: ignore[misc]  # untyped in kombu


class Transport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport, polling every ``POLLING_INTERVAL_SECONDS``."""

    Channel = Channel
    polling_interval = POLLING_INTERVAL_SECONDS


def register() -> None:
    """Make ``sqla+…`` broker URLs use :class:`Transport` in this process."""
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
