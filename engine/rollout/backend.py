"""What every rollout backend answers, the optional abilities a backend declares, and
one-by-one generation on top of any of them.

Every backend answers ``generate``; the trainer cannot tell two implementations apart. What a
backend may do besides is a small protocol of its own, checked with ``isinstance``: the loop
never probes for a method by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol, runtime_checkable

from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult
from engine.rollout.weights import SavedWeights


class RolloutBackend(Protocol):
    """Answers rollout requests; the trainer cannot tell two implementations apart."""

    def generate(self, request: RolloutRequest) -> RolloutResult:
        """Generate the request's M samples, in the order of its seeds."""
        ...


@runtime_checkable
class ConcurrentBackend(Protocol):
    """A backend that runs many requests at once (a pool of servers)."""

    def generate_many(self, requests: Iterable[RolloutRequest]) -> Iterator[RolloutResult]:
        """Every request's result, in completion order, each holding its request."""
        ...


@runtime_checkable
class WeightSyncing(Protocol):
    """A backend that samples with its own copy of the weights (servers): after each update it
    loads the policy's, and one process (rank 0) drives it for the whole group."""

    def sync_weights(self, saved: SavedWeights) -> float:
        """Load ``saved`` on every server; the seconds it took."""
        ...


@runtime_checkable
class MemoryReleasing(Protocol):
    """A backend sharing the trainer's GPU (a colocated server): it frees its memory while the
    trainer updates and takes it back for the next rollout."""

    def release_memory(self) -> float:
        """Free the GPU memory the server holds; the seconds it took."""
        ...

    def resume_memory(self) -> float:
        """Take the memory back (weights first, then the cache); the seconds it took."""
        ...


class KeepsMemory:
    """Rollouts that hold no GPU memory of the trainer's to give back: nothing to release."""

    def release_memory(self) -> float:
        return 0.0

    def resume_memory(self) -> float:
        return 0.0


class ReplayTolerance(NamedTuple):
    """How far the trainer's recomputed old log-probs may stray from a backend's, as
    max |ratio - 1|: up to ``passes`` passes, up to ``warns`` warns, above fails."""

    passes: float
    warns: float
    #: Why these numbers fit the backend, for the health check's message.
    why: str


#: A backend computing as the trainer does (its model code, in its dtype, on the same batches):
#: agrees to ~1e-7; against Flow-GRPO's clip_range 1e-4 a pass is a tenth of the clip, a failure ten
#: times it (the clip would act on replay noise).
SAME_NUMERICS = ReplayTolerance(1e-5, 1e-3, "the backend computes as the trainer does")
#: A server whose DiT runs in bf16 (sglang's default dit_precision): measured ~2.5e-4 inside
#: the schedule and ~1.8e-2 when the window holds the last step, whose small std magnifies the
#: rounding. The trainer recomputes the old log-probs itself, so training stays exact; the
#: check only catches a server that samples with other weights or another sampler.
BF16_SERVER = ReplayTolerance(
    1e-3,
    5e-2,
    "the server's DiT computes in bf16 and the trainer recomputes the old log-probs itself "
    "(training is unaffected); the last step's small std magnifies the rounding",
)


@runtime_checkable
class ReplayTolerant(Protocol):
    """A backend whose log-probs the replay check measures against its own tolerance."""

    def replay_tolerance(self) -> ReplayTolerance:
        """The tolerance that fits how this backend computes."""
        ...


def replay_tolerance(backend: RolloutBackend) -> ReplayTolerance:
    """The backend's own tolerance when it states one, else ``SAME_NUMERICS``."""
    return backend.replay_tolerance() if isinstance(backend, ReplayTolerant) else SAME_NUMERICS


def generate_one_by_one(backend: RolloutBackend, request: RolloutRequest) -> RolloutResult:
    """Answer ``request`` with M requests of one sample each, for comparison and debugging.

    Each sample keeps its own seed, so the result matches a batched one up to batch variance.
    """
    parts = [
        backend.generate(dataclasses.replace(request, seeds=(seed,))) for seed in request.seeds
    ]
    timings = PhaseTimings(
        encode=sum(part.timings.encode for part in parts),
        denoise=sum(part.timings.denoise for part in parts),
        decode=sum(part.timings.decode for part in parts),
    )
    return RolloutResult(
        request=request,
        samples=tuple(sample for part in parts for sample in part.samples),
        schedule=parts[0].schedule,
        timings=timings,
        dit_forwards=sum(part.dit_forwards for part in parts),
    )
