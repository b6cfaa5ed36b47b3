"""How one host's CPU cores are shared between the web server and the training worker.

``manage.py serve`` starts ``GROUPWISE_WEB_WORKERS`` server processes and the worker caps its
torch threads at ``GROUPWISE_WORKER_TORCH_THREADS``; unset, both come from the rules below, which
count the cores this process may run on (its affinity mask, which ``taskset``, systemd's
``CPUAffinity`` and container cpusets narrow), not the machine's.
"""

from __future__ import annotations

import os
import sys

#: More server processes than this on one host add memory (each imports Django and the engine's
#: torch: about 640 MB resident, measured) and database connections faster than answers: add web
#: hosts behind the proxy instead.
MAX_WEB_WORKERS = 8


def usable_cpus() -> int:
    """The CPUs this process may run on (at least 1)."""
    if sys.platform == "linux":
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_web_workers(cpus: int) -> int:
    """One server process per core, at most ``MAX_WEB_WORKERS``.

    Django runs a request's sync view in a thread under the GIL, so one process keeps at most one
    core busy answering; the API's views are CPU-bound (queries, JSON), so more processes than
    cores only queue the same work in more places.
    """
    return max(1, min(cpus, MAX_WEB_WORKERS))


def default_worker_torch_threads(cpus: int) -> int:
    """Every core but one, at least one.

    Torch starts one thread per core, and each of its parallel kernels waits for its slowest
    thread: with every core taken, the web server's requests and the step's threads take turns on
    the same cores (niceness lowers the worker's share, it frees no core). One core left over
    keeps the web server answering on a host the two share; on a worker-only GPU host the
    worker's CPU work is light, and one core fewer costs little.
    """
    return max(1, cpus - 1)
