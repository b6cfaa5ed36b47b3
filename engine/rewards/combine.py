"""The recipe's rewards as one: a weighted sum that keeps every part."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.recipe import RewardSpec
from engine.rewards.base import Images, Reward, RewardOutput, check_batch
from engine.rewards.registry import build_reward


class WeightedSum:
    """Sum of ``weight x reward`` over ``terms`` of ``(name, weight, reward)``.

    The output's components hold each reward's own score under its name and each of its
    components as ``"<name>.<component>"``, so the dashboard can show every part of the sum. A
    reward of weight 0 is still computed: it is watched without being trained on.
    """

    def __init__(self, terms: Sequence[tuple[str, float, Reward]]) -> None:
        if not terms:
            raise ValueError("a weighted sum needs at least one reward")
        names = [name for name, _, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        self.terms = tuple(terms)

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        size = check_batch(images, prompts, metadata)
        total = np.zeros(size, dtype=np.float64)
        components: dict[str, np.ndarray] = {}
        for name, weight, reward in self.terms:
            output = reward(images, prompts, metadata)
            if output.scores.shape != (size,):
                raise ValueError(
                    f"reward '{name}' returned scores of shape {output.scores.shape} for "
                    f"{size} images"
                )
            scores = output.scores.astype(np.float64)
            total += weight * scores
            components[name] = scores
            for part, values in output.components.items():
                components[f"{name}.{part}"] = values.astype(np.float64)
        return RewardOutput(total, components)


def build_rewards(specs: Sequence[RewardSpec]) -> WeightedSum:
    """Build the recipe's ``rewards`` list into one ``WeightedSum``."""
    return WeightedSum([(s.name, s.weight, build_reward(s.name, s.path)) for s in specs])
