"""A rollout's steps 1-5 as the loop and the sweep take them: prompts drawn from the rollout's
seed, scores put back in request order, advantages by hand, cut per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from engine.models.tiny.weights import load_tiny
from engine.overrides import apply_overrides
from engine.presets import preset
from engine.recipe import Recipe
from engine.rewards import RewardOutput
from engine.rollout import InProcessBackend
from engine.run.steps import Scoring, draw_requests, rollout_advantages
from tests.recipes import TINY_COLOR_SMALL


def _recipe(**settings: Any) -> Recipe:
    return apply_overrides(
        preset("tiny-color"),
        # Microgroups of 2: each group is two requests, which step 4 cuts the advantages into.
        {**TINY_COLOR_SMALL, "diffusion_microgroup_size": 2, "micro_batch_size_sample": 2,
         "num_inference_steps": 3, "sde_window_size": 1, **settings},
    )  # fmt: skip


def test_a_rollout_draws_the_same_prompts_and_seeds_whatever_m_is() -> None:
    recipe = _recipe()
    train = tuple(f"prompt {i}" for i in range(10))
    prompts, requests = draw_requests(recipe, train, 3)
    assert (prompts, requests) == draw_requests(recipe, train, 3)
    assert prompts != draw_requests(recipe, train, 4)[0]
    halves = draw_requests(apply_overrides(recipe, {"diffusion_microgroup_size": 4}), train, 3)
    assert halves[0] == prompts
    assert [s for r in halves[1] for s in r.seeds] == [s for r in requests for s in r.seeds]
    # Group g is prompts[g], cut into G / M = 2 requests of M = 2 samples.
    assert [(r.prompt, len(r.seeds)) for r in requests] == [
        (prompts[0], 2), (prompts[0], 2), (prompts[1], 2), (prompts[1], 2)
    ]  # fmt: skip


class ByRequest:
    """A reward that scores each image with the number its prompt ends in."""

    def __call__(
        self, images: np.ndarray, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        return RewardOutput(np.array([float(p.split()[-1]) for p in prompts]))


def test_scores_go_back_in_request_order_whatever_order_results_arrived_in() -> None:
    backend = InProcessBackend(load_tiny())
    _prompts, requests = draw_requests(_recipe(), tuple(f"p {i}" for i in range(5)), 0)
    results = [backend.generate(request) for request in requests]
    with Scoring(ByRequest()) as scoring:
        for result in reversed(results):
            scoring.submit(result)
        scores = scoring.scores(requests)
    expected = [float(r.request.prompt.split()[-1]) for r in results for _ in r.samples]
    assert scores.scores.tolist() == expected
    assert scores.reward_seconds >= 0


def test_advantages_are_normalised_in_each_group_and_cut_per_request() -> None:
    backend = InProcessBackend(load_tiny())
    recipe = _recipe(adv_clip_max=5.0, globalize_reward_std=False)
    _prompts, requests = draw_requests(recipe, ("a", "b"), 0)
    results = [backend.generate(request) for request in requests]
    # Group 0: mean 2.5, population std sqrt(1.25) plus Flow-GRPO's 1e-4; group 1 all equal.
    scores = np.array([1.0, 2.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0])
    outcome = rollout_advantages(recipe, scores, results)
    std = 1.25**0.5 + 1e-4
    by_hand = [(1 - 2.5) / std, (2 - 2.5) / std, (3 - 2.5) / std, (4 - 2.5) / std, 0, 0, 0, 0]
    assert outcome.rewards.tolist() == [[1.0, 2.0, 3.0, 4.0], [7.0] * 4]
    assert outcome.zero_std_groups == (1,)
    assert [tuple(a.shape) for a in outcome.per_request] == [(2,)] * 4
    torch.testing.assert_close(
        torch.cat(outcome.per_request).double(), torch.tensor(by_hand, dtype=torch.float64),
        rtol=0, atol=1e-6,
    )  # fmt: skip
