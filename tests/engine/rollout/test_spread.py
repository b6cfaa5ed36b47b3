"""Generation spread over two gloo ranks: the same results as one process, in request order, on
both ranks, with an odd number of requests; a stop on rank 0 stops both at the same round."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.models.tiny.weights import load_tiny
from engine.parallel.distributed import DistContext
from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.spread import generate_spread
from tests.engine.parallel.launch import launch


class Halt(Exception):
    """What rank 0's check raises once it has seen enough rounds."""


def _requests() -> list[RolloutRequest]:
    # Three requests over two ranks: rank 1 repeats the last one in the second round.
    return [
        RolloutRequest(f"prompt {g}", seeds=(10 * g, 10 * g + 1), height=32, width=32,
                       num_inference_steps=3, sde_step_indices=(0, 1), group_index=g)
        for g in range(3)
    ]  # fmt: skip


def _rank(context: DistContext) -> dict[str, Any]:
    backend = InProcessBackend(load_tiny())
    requests = _requests()
    rounds = [
        [(r.request.group_index, r.images, r.log_probs) for r in round_results]
        for round_results in generate_spread(backend, requests, context, lambda: None, (Halt,))
    ]
    checks: list[int] = []

    def halt_after_first_round() -> None:
        checks.append(len(checks))
        raise Halt("enough")

    seen = 0
    try:
        for _round in generate_spread(backend, requests, context, halt_after_first_round, (Halt,)):
            seen += 1
    except Halt as stop:
        halted = str(stop)
    return {"rounds": rounds, "halted": halted, "seen": seen, "checks": checks}


def test_two_ranks_generate_what_one_process_does_and_stop_together() -> None:
    backend = InProcessBackend(load_tiny())
    alone = [backend.generate(request) for request in _requests()]
    for rank, got in enumerate(launch(2, _rank, timeout=300)):
        # Round one holds requests 0 and 1, round two request 2 only (rank 1's repeat dropped).
        assert [[group for group, _images, _lp in r] for r in got["rounds"]] == [[0, 1], [2]]
        flat = [entry for r in got["rounds"] for entry in r]
        for (_group, images, log_probs), reference in zip(flat, alone, strict=True):
            assert np.array_equal(images, reference.images)
            torch.testing.assert_close(log_probs, reference.log_probs, rtol=0, atol=1e-6)
        # Rank 0's check raised after the first round's generation: both ranks raise it there,
        # before receiving any round, and only rank 0 ran the check.
        assert (got["halted"], got["seen"]) == ("enough", 0)
        assert got["checks"] == ([0] if rank == 0 else [])
