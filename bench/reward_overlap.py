"""How much reward time hides behind rollout in the tiny recipe.

Rolls out `tiny-color` microgroup by microgroup exactly as the loop does, scoring each finished
microgroup on the scorer's worker thread while the next one is generated, and reports the reward
seconds, the seconds the loop still waited for scores, and the hidden share. Besides the colour
reward it times a slower one on the same images: the colour reward made to cost as much as the
rollout of a microgroup (torch work standing in for a reward model), to show the overlap at work.
Prints a table and appends it to docs/performance.md with the machine.

    .venv/bin/python bench/reward_overlap.py [--rollouts 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.models.loading import load_model  # noqa: E402
from engine.presets import PRESETS  # noqa: E402
from engine.rewards import Reward, RewardOutput, RewardScorer, build_rewards  # noqa: E402
from engine.rollout.in_process import InProcessBackend  # noqa: E402
from engine.rollout.plan import rollout_requests  # noqa: E402


class Busy:
    """The colour reward plus ``seconds`` of torch matrix products per batch: like a reward
    model, the work runs in torch kernels, which release the GIL."""

    def __init__(self, reward: Reward, seconds: float) -> None:
        self.reward, self.seconds = reward, seconds

    def __call__(
        self, images: np.ndarray, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        matrix = torch.randn(256, 256)
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:
            matrix = torch.tanh(matrix @ matrix)
        return self.reward(images, prompts, metadata)


def overlap(reward: Reward, rollouts: int) -> tuple[float, float, float, float]:
    recipe = PRESETS["tiny-color"].recipe
    backend = InProcessBackend(load_model("tiny", None))
    prompts = list(recipe.data.prompts)
    generate = reward_total = waited = 0.0
    for index in range(rollouts):
        with RewardScorer(reward) as scorer:
            started = time.perf_counter()
            for request in rollout_requests(recipe, prompts, index):
                result = backend.generate(request)
                scorer.submit(result.images, [request.prompt] * request.num_outputs, [{}] * 8)
            generate += time.perf_counter() - started
            scored = scorer.results()
        reward_total += scored.reward_seconds
        waited += scored.wait_seconds
    hidden = 1 - waited / reward_total if reward_total else 1.0
    return generate, reward_total, waited, hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=5)
    args = parser.parse_args()
    color = build_rewards(PRESETS["tiny-color"].recipe.rewards)
    per_request = overlap(color, 1)[0] / 4
    rows = []
    for name, reward in (
        ("color", color),
        (f"color + {per_request:.2f} s busy work per microgroup", Busy(color, per_request)),
    ):
        generate, total, waited, hidden = overlap(reward, args.rollouts)
        rows.append(f"| {name} | {generate:.2f} | {total:.2f} | {waited:.2f} | {hidden:.0%} |")
    table = "\n".join(
        [
            heading("Reward time hidden behind rollout", "CPU"),
            "",
            f"`bench/reward_overlap.py`: tiny-color, {args.rollouts} rollouts of 4 microgroups "
            "of 8; seconds summed over the rollouts.",
            "",
            "| reward | rollout s | reward s | loop waited s | hidden |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
