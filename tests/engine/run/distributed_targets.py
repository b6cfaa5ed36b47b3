"""Rank targets for tests/engine/parallel/test_distributed.py that misbehave.

They live apart from the test module so that a rank imports only torch and
``engine.parallel.distributed``, not the models: these ranks start fast.
"""

from __future__ import annotations

import threading

import torch.distributed as dist

from engine.parallel.distributed import DistContext


def fail_on_rank_one(context: DistContext) -> None:
    """Rank 1 raises; rank 0 waits in a barrier rank 1 never reaches (a hang without launch)."""
    if context.rank == 1:
        raise RuntimeError("rank one's reward server is gone")
    dist.barrier()


def stuck(context: DistContext) -> None:
    """Rank 1 never returns: it waits on an event nobody sets."""
    if context.rank == 1:
        threading.Event().wait()
