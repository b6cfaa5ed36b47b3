"""Who runs the loop: one process, or rank 0 driving servers for a group of two gloo ranks.

The backends here are real (the tiny model in process); "servers" are the same backend answering
in reverse order through ``generate_many``, as a pool of servers answers in completion order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from engine.models.tiny.weights import load_tiny
from engine.parallel.distributed import DistContext
from engine.rollout import InProcessBackend, RolloutRequest, RolloutResult
from engine.rollout.backend import ConcurrentBackend, MemoryReleasing, WeightSyncing
from engine.rollout.sglang import SGLangBackend
from engine.rollout.weights import SavedWeights
from engine.run.world import OneProcess, RankGroup, Stopped
from tests.engine.parallel.launch import launch


def _requests() -> list[RolloutRequest]:
    return [
        RolloutRequest(f"prompt {g}", seeds=(10 * g, 10 * g + 1), height=32, width=32,
                       num_inference_steps=3, sde_step_indices=(0, 1), group_index=g)
        for g in range(3)
    ]  # fmt: skip


class ReversedServers:
    """A pool of "servers" that answers every request at once, the last one first."""

    def __init__(self) -> None:
        self.inner = InProcessBackend(load_tiny())

    def generate(self, request: RolloutRequest) -> RolloutResult:
        return self.inner.generate(request)

    def generate_many(self, requests: Iterable[RolloutRequest]) -> Iterator[RolloutResult]:
        for request in reversed(list(requests)):
            yield self.inner.generate(request)

    def sync_weights(self, saved: SavedWeights) -> float:
        return 0.0


def test_the_backends_declare_their_abilities_on_protocols() -> None:
    assert issubclass(SGLangBackend, ConcurrentBackend)
    assert issubclass(SGLangBackend, WeightSyncing)
    assert issubclass(SGLangBackend, MemoryReleasing)
    for ability in (ConcurrentBackend, WeightSyncing, MemoryReleasing):
        assert not issubclass(InProcessBackend, ability)


def test_results_come_back_in_request_order_and_are_seen_as_they_arrive() -> None:
    requests, arrived, checks = _requests(), [], []
    results = OneProcess().generate(
        ReversedServers(), requests, lambda: checks.append(1), arrived.append
    )
    assert [r.request.group_index for r in arrived] == [2, 1, 0]
    assert [r.request.group_index for r in results] == [0, 1, 2]
    assert all(result.request is request for result, request in zip(results, requests, strict=True))
    # Once before the pool starts, then after each result.
    assert len(checks) == 4


def test_one_at_a_time_a_stop_before_a_request_stops_there() -> None:
    backend, arrived = InProcessBackend(load_tiny()), []
    asked = iter([None, None, "cancelled"])

    def check() -> None:
        if (status := next(asked)) is not None:
            raise Stopped(status)

    with pytest.raises(Stopped) as stop:
        OneProcess().generate(backend, _requests(), check, arrived.append)
    assert stop.value.status == "cancelled"
    assert [r.request.group_index for r in arrived] == [0, 1]


def _rank(context: DistContext) -> dict[str, Any]:
    world = RankGroup(context, servers=True)
    # Only rank 0 holds the servers' backend; another rank's is never asked.
    backend = ReversedServers() if context.is_main else InProcessBackend(load_tiny())
    seen: list[int] = []
    results = world.generate(
        backend, _requests(), lambda: None, lambda r: seen.append(r.request.group_index)
    )
    evaluation = world.generate(
        backend, _requests(), lambda: None, lambda r: None, every_rank=False
    )
    checks = iter([None, "interrupted"])

    def check() -> None:
        if context.is_main and (status := next(checks)) is not None:
            raise Stopped(status)

    try:
        world.generate(backend, _requests(), check, lambda r: None)
        stopped = None
    except Stopped as stop:
        stopped = stop.status
    return {
        "groups": [r.request.group_index for r in results],
        "image_shapes": [r.images.shape for r in results],
        "log_probs": [r.log_probs.numpy() for r in results],
        "seen": seen,
        "evaluation": len(evaluation),
        "stopped": stopped,
        "on_main": world.on_main(lambda: context.rank),
    }


def test_rank_zero_drives_the_servers_and_the_others_train_on_what_it_got() -> None:
    rank0, rank1 = launch(2, _rank, timeout=300)
    assert rank0["groups"] == rank1["groups"] == [0, 1, 2]
    assert rank0["seen"] == [2, 1, 0] and rank1["seen"] == []
    # Rank 1 trains only: it gets the trajectories, not the images.
    assert all(shape[0] == 2 and shape[1:] != (0, 0, 3) for shape in rank0["image_shapes"])
    assert all(shape[1:] == (0, 0, 3) for shape in rank1["image_shapes"])
    for mine, theirs in zip(rank0["log_probs"], rank1["log_probs"], strict=True):
        assert np.array_equal(mine, theirs)
    # Evaluation is scored on rank 0 alone: nothing travels.
    assert (rank0["evaluation"], rank1["evaluation"]) == (3, 0)
    # Rank 0's stop reaches rank 1 in the same call; rank 0's work's result reaches both.
    assert rank0["stopped"] == rank1["stopped"] == "interrupted"
    assert rank0["on_main"] == rank1["on_main"] == 0
