"""A short seeded tiny-color run learns: its last rollouts clearly beat its first.

The full curve (300 steps, every prompt taking its colour) is measured by bench/learning.py.
"""

from __future__ import annotations

from pathlib import Path

from engine import events
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.run.loop import run

STEPS, WINDOW = 60, 10


def test_tiny_color_reward_rises(tmp_path: Path) -> None:
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe, {"max_steps": STEPS, "eval_every": 0, "checkpoint_every": 0}
    )
    means: list[float] = []

    def sink(event: events.Event) -> None:
        if isinstance(event, events.RolloutFinished):
            rewards = [s.reward for g in event.groups for s in g.samples]
            means.append(sum(rewards) / len(rewards))

    assert run(recipe, sink, out_dir=tmp_path).status == "finished"
    first = sum(means[:WINDOW]) / WINDOW
    last = sum(means[-WINDOW:]) / WINDOW
    # Measured here: ~0.51 over the first ten rollouts, ~0.6 over the last ten.
    assert last > first + 0.04, (first, last)
