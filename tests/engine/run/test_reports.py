"""The loop's event builders on hand-made results: order, per-sample values and means."""

from __future__ import annotations

import numpy as np
import torch

from engine.rewards import RewardOutput
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample
from engine.run.reports import evaluation_event, in_request_order


def _result(request: RolloutRequest) -> RolloutResult:
    samples = tuple(
        RolloutSample(
            seed=seed,
            image=np.full((2, 2, 3), seed % 256, dtype=np.uint8),
            log_probs=torch.zeros(0),
            latents=torch.zeros(1),
            sigmas=torch.zeros(1),
        )
        for seed in request.seeds
    )
    return RolloutResult(
        request, samples, torch.zeros(1), PhaseTimings(encode=0, denoise=0, decode=0), 1
    )


def _requests() -> list[RolloutRequest]:
    return [
        RolloutRequest(
            f"p{g}",
            seeds=(10 * g, 10 * g + 1),
            height=2,
            width=2,
            num_inference_steps=1,
            group_index=g,
        )
        for g in range(3)
    ]


def test_results_and_their_scores_go_back_in_request_order() -> None:
    requests = _requests()
    arrived = [_result(requests[2]), _result(requests[0]), _result(requests[1])]
    # Scores as they arrived: two per result.
    scores = np.array([20.0, 21.0, 0.0, 1.0, 10.0, 11.0])
    results, ordered, components = in_request_order(
        requests, arrived, scores, {"mean": scores / 10}
    )
    assert [r.request.group_index for r in results] == [0, 1, 2]
    assert ordered.tolist() == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]
    assert components["mean"].tolist() == [0.0, 0.1, 1.0, 1.1, 2.0, 2.1]


def test_the_evaluation_event_holds_each_sample_and_the_means() -> None:
    results = [_result(request) for request in _requests()[:2]]
    output = RewardOutput(
        scores=np.array([1.0, 2.0, 3.0, 6.0]), components={"red": np.array([0.0, 0.0, 1.0, 1.0])}
    )
    event = evaluation_event(4, results, output)
    assert event.step == 4
    assert event.reward_mean == 3.0  # (1 + 2 + 3 + 6) / 4
    assert event.reward_components == {"red": 0.5}
    assert [(s.prompt, s.seed, s.reward) for s in event.samples] == [
        ("p0", 0, 1.0), ("p0", 1, 2.0), ("p1", 10, 3.0), ("p1", 11, 6.0),
    ]  # fmt: skip
    assert event.samples[3].reward_components == {"red": 1.0}
    assert event.samples[2].image[0, 0, 0] == 10
