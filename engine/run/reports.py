"""The events the training loop reports, built from a rollout's or an evaluation's results.

Pure functions: results and scores in, an event (or results in order) out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine import events
from engine.layout import Layout
from engine.rewards import RewardOutput
from engine.rollout.plan import request_order
from engine.rollout.types import RolloutRequest, RolloutResult


def in_request_order(
    requests: Sequence[RolloutRequest],
    arrived: list[RolloutResult],
    scores: np.ndarray,
    components: dict[str, np.ndarray],
) -> tuple[list[RolloutResult], np.ndarray, dict[str, np.ndarray]]:
    """Results, scores and components put back in request order (group, then sample), so a
    rollout's samples keep their places whatever order the servers answered in."""
    order = request_order(requests, arrived)
    starts = np.cumsum([0] + [len(result.samples) for result in arrived])
    rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in order])
    return (
        [arrived[i] for i in order],
        scores[rows],
        {name: values[rows] for name, values in components.items()},
    )


def rollout_event(
    step: int,
    rollout_index: int,
    plan: Layout,
    prompts: list[str],
    results: list[RolloutResult],
    rewards: torch.Tensor,
    components: dict[str, np.ndarray],
    advantages: torch.Tensor,
) -> events.RolloutFinished:
    """The rollout's event: each group's samples with seed, image, reward, its components and
    advantage; ``rewards`` [P, G] and ``advantages`` in the results' order."""
    samples_by_group: dict[int, list[events.Sample]] = {}
    flat = 0
    for result in results:
        group = result.request.group_index
        for sample in result.samples:
            index = len(samples_by_group.setdefault(group, []))
            samples_by_group[group].append(
                events.Sample(
                    sample_index=index,
                    seed=sample.seed,
                    image=sample.image,
                    reward=float(rewards.flatten()[flat]),
                    reward_components={k: float(v[flat]) for k, v in components.items()},
                    advantage=float(advantages.flatten()[flat]),
                )
            )
            flat += 1
    return events.RolloutFinished(
        step=step,
        rollout_index=rollout_index,
        rollout_seed=plan.rollout_seed,
        sde_window=tuple(plan.sde_window),
        groups=tuple(
            events.PromptGroup(group_index=g, prompt=prompts[g], samples=tuple(samples))
            for g, samples in sorted(samples_by_group.items())
        ),
    )


def evaluation_event(
    step: int, results: Sequence[RolloutResult], output: RewardOutput
) -> events.EvaluationFinished:
    """The evaluation's event: every sample with its reward and components (``output`` scores
    the results' samples in order), and their means."""
    scores = np.asarray(output.scores, dtype=np.float64)
    samples = []
    flat = 0
    for result in results:
        for sample in result.samples:
            samples.append(
                events.EvalSample(
                    prompt=result.request.prompt,
                    seed=sample.seed,
                    image=sample.image,
                    reward=float(scores[flat]),
                    reward_components={
                        k: float(np.asarray(v)[flat]) for k, v in output.components.items()
                    },
                )
            )
            flat += 1
    return events.EvaluationFinished(
        step=step,
        reward_mean=float(scores.mean()),
        reward_components={
            k: float(np.asarray(v, dtype=np.float64).mean()) for k, v in output.components.items()
        },
        samples=tuple(samples),
    )
