"""A rollout's steps 1-5 as functions: the loop takes them every rollout, the sweep at every M.

1 ``draw_requests``: the rollout's prompts, drawn from its seed, cut into microgroup requests. 2
generation is the backend's (``engine.run.world`` spreads it over ranks). 3 ``Scoring`` scores each
result on a worker thread while the next is generated. 4 ``rollout_advantages``: rewards become
advantages inside each prompt group. 5 ``update``: the trainer's optimizer steps on them, and
``sync_weights``: the servers load the new weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import numpy as np
import torch

from engine.advantages import group_advantages
from engine.layout import layout
from engine.models.base import FlowModel
from engine.models.precision import resolved_offload
from engine.policy import Policy
from engine.prompts import draw_prompts
from engine.recipe import Recipe
from engine.rewards import Reward, RewardScorer
from engine.rollout.backend import RolloutBackend, WeightSyncing
from engine.rollout.plan import rollout_requests
from engine.rollout.types import RolloutRequest, RolloutResult
from engine.rollout.weights import remove_older_syncs, save_weights
from engine.run.reports import in_request_order
from engine.run.world import World
from engine.trainer import Replay, StepMetrics, Trainer, rollout_conditionings


def draw_requests(
    recipe: Recipe, train_prompts: tuple[str, ...], rollout_index: int
) -> tuple[list[str], list[RolloutRequest]]:
    """1. Rollout ``rollout_index``'s prompts, drawn from its seed (a resumed run draws the
    same ones), and its requests: each prompt group cut into microgroups of M samples."""
    seed = layout(recipe, rollout_index).rollout_seed
    prompts = draw_prompts(train_prompts, seed, recipe.layout.rollout_batch_size)
    return prompts, rollout_requests(recipe, prompts, rollout_index)


class Scores(NamedTuple):
    """Step 3's outcome, in request order (group, then sample)."""

    #: Each sample's reward [N].
    scores: np.ndarray
    #: Each named component of the reward [N] (a weighted sum's parts).
    components: dict[str, np.ndarray]
    #: Seconds the reward ran, summed over the batches.
    reward_seconds: float


class Scoring:
    """3. Scores each result on a worker thread as it arrives (``engine.rewards.scorer``), so a
    microgroup is scored while the next is generated. A context manager, like the scorer."""

    def __init__(self, reward: Reward) -> None:
        self._scorer = RewardScorer(reward)
        self._arrived: list[RolloutResult] = []

    def submit(self, result: RolloutResult) -> None:
        """Queue ``result``'s images with its prompt; results may arrive in any order."""
        count = result.request.num_outputs
        self._scorer.submit(result.images, [result.request.prompt] * count, [{}] * count)
        self._arrived.append(result)

    def scores(self, requests: Sequence[RolloutRequest]) -> Scores:
        """Wait for every submitted result's scores; in the order of ``requests``."""
        scored = self._scorer.results()
        arrived, self._arrived = self._arrived, []
        _results, scores, components = in_request_order(
            requests, arrived, scored.scores(), scored.components()
        )
        return Scores(scores, components, scored.reward_seconds)

    def __enter__(self) -> Scoring:
        self._scorer.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._scorer.__exit__(kind, error, traceback)


class RolloutAdvantages(NamedTuple):
    """Step 4's outcome."""

    #: The rewards by prompt group [P, G], float64.
    rewards: torch.Tensor
    #: The advantages [P, G] (Flow-GRPO's group-relative normalisation, ``engine.advantages``).
    advantages: torch.Tensor
    #: The groups whose rewards were all equal (their advantages are 0).
    zero_std_groups: tuple[int, ...]
    #: The advantages cut to each request's M samples, in request order: what step 5 takes.
    per_request: list[torch.Tensor]


def rollout_advantages(
    recipe: Recipe, scores: np.ndarray, results: Sequence[RolloutResult]
) -> RolloutAdvantages:
    """4. Advantages inside each prompt group of ``scores`` (request order), cut per request."""
    group_size = recipe.layout.n_samples_per_prompt
    # float64: a group's std can be tiny, and the normalisation divides by it.
    rewards = torch.as_tensor(np.asarray(scores), dtype=torch.float64).reshape(-1, group_size)
    outcome = group_advantages(
        rewards,
        globalize_reward_std=recipe.optimiser.globalize_reward_std,
        adv_clip_max=recipe.optimiser.adv_clip_max,
    )
    sizes = [len(result.samples) for result in results]
    per_request = list(torch.split(outcome.advantages.flatten(), sizes))
    return RolloutAdvantages(rewards, outcome.advantages, outcome.zero_std_groups, per_request)


def update(
    recipe: Recipe,
    model: FlowModel,
    trainer: Trainer,
    results: Sequence[RolloutResult],
    advantages: Sequence[torch.Tensor],
) -> tuple[Replay, list[StepMetrics]]:
    """5. The rollout's optimizer steps: each prompt encoded once, then (with the text encoders
    offloaded when the recipe says so: the rollout is done with them) the old log-probs
    recomputed and ``num_steps_per_rollout`` steps taken on ``advantages`` (per request)."""
    conditionings = rollout_conditionings(model, results)
    if resolved_offload(recipe) == "cpu":
        model.offload_text_encoders()
    return trainer.train_rollout(results, conditionings, advantages)


def sync_weights(world: World, policy: Policy, backend: RolloutBackend, folder: Path) -> float:
    """5. The servers load ``policy``'s weights, written to ``folder``; the seconds it took.

    Every sync writes a folder of its own (a server reloads an adapter only from a new path) and
    removes the older ones beside it once the servers loaded it. Every rank calls it: under FSDP
    every rank takes part in gathering the weights that rank 0 alone writes and sends.
    """
    saved = save_weights(policy, folder, write=world.is_main) if world.sharded else None

    def send() -> float:
        weights = saved or save_weights(policy, folder)
        # Only rank 0 sends, and rank 0's backend is the servers'.
        assert isinstance(backend, WeightSyncing) and weights is not None
        seconds = float(backend.sync_weights(weights))
        remove_older_syncs(folder.parent, folder)
        return seconds

    return world.on_main(send)
