"""What every rollout backend answers, and one-by-one generation on top of any of them."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult


class RolloutBackend(Protocol):
    """Answers rollout requests; the trainer cannot tell two implementations apart."""

    def generate(self, request: RolloutRequest) -> RolloutResult:
        """Generate the request's M samples, in the order of its seeds."""
        ...


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
