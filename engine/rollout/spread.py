"""In-process generation spread over the ranks of a data-parallel group.

Every rank holds the policy (whole, or its FSDP shard), so every rank generates: in round r,
rank k generates request r x world + k, and the round's results are gathered on every rank
(``all_gather_objects``). All ranks thus run the same number of DiT forwards in the same order,
which FSDP needs (a sharded forward is a collective), and each rank generates 1/world of the
requests. A rank past the last request in the final round repeats the last request and its
result is dropped: FSDP needs that rank in the round's forwards too.

Results are exact replays of one process's: each request carries its own seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from engine.parallel.distributed import DistContext, all_gather_objects
from engine.rollout.backend import RolloutBackend
from engine.rollout.types import RolloutRequest, RolloutResult


def generate_spread(
    backend: RolloutBackend,
    requests: Sequence[RolloutRequest],
    context: DistContext,
    check: Callable[[], None],
    passes: tuple[type[Exception], ...],
) -> Iterator[list[RolloutResult]]:
    """Each round's results, in request order, on every rank (every rank must iterate it),
    each holding its request from ``requests``.

    ``check`` is called on rank 0 after each round's generation; an exception of a type in
    ``passes`` it raises (a stop) travels with the round's results and every rank raises it,
    so all ranks stop at the same round. Any other failure ends its own rank, which the
    supervisor of the group reports (``engine.run.ranks``).
    """
    world = context.world_size
    for start in range(0, len(requests), world):
        index = start + context.rank
        result = backend.generate(requests[min(index, len(requests) - 1)])
        stop: Exception | None = None
        if context.is_main:
            try:
                check()
            except passes as error:
                stop = error
        round_results = all_gather_objects(
            (result if index < len(requests) else None, stop), context
        )
        _first, rank_zero_stop = round_results[0]
        if rank_zero_stop is not None:
            raise rank_zero_stop
        # Each result gets this rank's own request object back (the loop matches them by
        # identity), in place of the copy that travelled.
        yield [
            replace(value, request=requests[start + k])
            for k, (value, _stop) in enumerate(round_results)
            if value is not None
        ]
