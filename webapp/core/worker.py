"""The Celery worker's command line: one copy for ``manage.py serve``, the tests and the benches."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def worker_command(
    queues: str,
    *,
    hostname: str | None = None,
    loglevel: str = "INFO",
    options: Sequence[str] = (),
) -> list[str]:
    """The argv that starts one Groupwise worker consuming ``queues`` (comma-separated).

    The pool is ``solo`` with concurrency 1: a worker runs one task at a time (a training run
    owns its GPUs), in the worker process itself, so the task sees the heartbeat's current run
    and the shutdown request (``webapp.core.heartbeat``). ``hostname`` is Celery's node name
    (``name@%h``), its default when None; ``options`` are further worker options, appended.
    """
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "webapp",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--queues",
        queues,
        *(["--hostname", hostname] if hostname is not None else []),
        "--loglevel",
        loglevel,
        *options,
    ]
