"""Who runs the loop: one process (``OneProcess``) or one rank of a group (``RankGroup``).

The loop's body is the same either way; the difference lives here, in three abilities:

- ``on_main(work)``: ``work`` on rank 0, its result on every rank. Rank 0 alone scores, reports,
  writes checkpoints and talks to rollout servers; the others wait, so the call is also a barrier.
- ``generate(backend, requests, ...)``: every request's result in request order. In process the
  requests are spread over the ranks (each generates its share with its copy or shard of the
  policy, every rank gets every result: ``engine.rollout.spread``); servers are driven by rank 0
  alone and the others receive what training needs (no images).
- ``is_main`` and ``sharded``: whether this process writes, and whether FSDP shards the weights
  (gathering them is then a collective of every rank).

A stop is ``Stopped``, raised on rank 0 by the loop's stop check; it travels with the next
collective, so every rank stops at the same point. Any other failure on rank 0 ends every rank
(``engine.parallel.distributed.RankZeroFailed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Literal, Protocol, TypeVar

import numpy as np

from engine.parallel.distributed import DistContext, on_rank_zero
from engine.rollout.backend import ConcurrentBackend, RolloutBackend
from engine.rollout.plan import request_order
from engine.rollout.spread import generate_spread
from engine.rollout.types import RolloutRequest, RolloutResult

T = TypeVar("T")
Status = Literal["finished", "cancelled", "failed", "interrupted"]
#: Called on rank 0 as each result arrives, in completion order (the reward's scoring).
OnResult = Callable[[RolloutResult], None]


class Stopped(Exception):
    """Raised on rank 0 when the run is asked to stop; carries the status to end with."""

    def __init__(self, status: Status) -> None:
        super().__init__(status)
        self.status = status


class World(Protocol):
    """What differs between one process and a rank of a group; see the module docstring."""

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (or alone): the one that writes."""
        ...

    @property
    def sharded(self) -> bool:
        """Whether FSDP shards the weights: gathering them whole needs every rank."""
        ...

    def on_main(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, its result on every rank; a ``Stopped`` there stops all."""
        ...

    def generate(
        self,
        backend: RolloutBackend,
        requests: Sequence[RolloutRequest],
        check: Callable[[], None],
        on_result: OnResult,
        *,
        every_rank: bool = True,
    ) -> list[RolloutResult]:
        """Every request's result, in request order; ``check`` between requests (on rank 0).

        On rank 0 each result has its images and goes to ``on_result`` as it arrives. The other
        ranks get the results without images, or none when ``every_rank`` is false and the
        backend runs on rank 0 alone (evaluation: only rank 0 scores it).
        """
        ...


def world_for(context: DistContext | None, *, servers: bool) -> World:
    """The world ``context`` describes (``OneProcess`` without one); ``servers``: whether the
    rollouts come from servers, which rank 0 alone drives, rather than from the ranks' policy."""
    return OneProcess() if context is None else RankGroup(context, servers=servers)


class OneProcess:
    """The loop in this process alone."""

    is_main = True
    sharded = False

    def on_main(self, work: Callable[[], T]) -> T:
        return work()

    def generate(
        self,
        backend: RolloutBackend,
        requests: Sequence[RolloutRequest],
        check: Callable[[], None],
        on_result: OnResult,
        *,
        every_rank: bool = True,
    ) -> list[RolloutResult]:
        arrived = []
        for result in _each_result(backend, requests, check):
            on_result(result)
            arrived.append(result)
        return [arrived[i] for i in request_order(requests, arrived)]


class RankGroup:
    """The loop as one rank of a data-parallel group (``engine.parallel.distributed``)."""

    def __init__(self, context: DistContext, *, servers: bool) -> None:
        self._context = context
        self._servers = servers

    @property
    def is_main(self) -> bool:
        return self._context.is_main

    @property
    def sharded(self) -> bool:
        return self._context.fsdp

    def on_main(self, work: Callable[[], T]) -> T:
        return on_rank_zero(self._context, work, passes=(Stopped,))

    def generate(
        self,
        backend: RolloutBackend,
        requests: Sequence[RolloutRequest],
        check: Callable[[], None],
        on_result: OnResult,
        *,
        every_rank: bool = True,
    ) -> list[RolloutResult]:
        if self._servers:
            # Only rank 0 holds the servers' backend; the others only train on the results.
            def alone() -> list[RolloutResult]:
                return OneProcess().generate(backend, requests, check, on_result)

            share = _without_images if every_rank else _nothing
            return on_rank_zero(self._context, alone, share=share, passes=(Stopped,))
        # In process every rank generates its share (a sharded model cannot run on one rank).
        results: list[RolloutResult] = []
        for round_results in generate_spread(backend, requests, self._context, check, (Stopped,)):
            for result in round_results:
                if self._context.is_main:
                    on_result(result)
                results.append(result)
        return results


def _each_result(
    backend: RolloutBackend, requests: Sequence[RolloutRequest], check: Callable[[], None]
) -> Iterator[RolloutResult]:
    """The results in completion order, ``check`` before each request and after each result."""
    if isinstance(backend, ConcurrentBackend):
        check()
        for result in backend.generate_many(requests):
            yield result
            check()
        return
    for request in requests:
        check()
        yield backend.generate(request)


def _without_images(results: list[RolloutResult]) -> list[RolloutResult]:
    """What the other ranks train on: the results without their images."""
    blank = np.zeros((0, 0, 3), dtype=np.uint8)
    return [
        replace(result, samples=tuple(replace(s, image=blank) for s in result.samples))
        for result in results
    ]


def _nothing(_results: list[RolloutResult]) -> list[RolloutResult]:
    return []
