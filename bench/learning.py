"""tiny-color learning on this machine: the reward curve, time per GRPO step, per-prompt colours.

Runs the `tiny-color` preset (4 prompts x 8 samples, 200 steps; `--set max_steps=300` shows
what happens after) with the in-process backend, prints the mean reward every 10 steps with each
prompt's mean and the seconds per step, and when the mean first reached 0.8 with every prompt's
samples at 0.7 or more; appends the table to docs/performance.md with the machine.

    .venv/bin/python bench/learning.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import events  # noqa: E402
from engine.overrides import apply_overrides, parse_assignments  # noqa: E402
from engine.presets import PRESETS  # noqa: E402
from engine.run.loop import run  # noqa: E402

GOAL, PER_PROMPT = 0.8, 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {"eval_every": 0, "checkpoint_every": 0, **parse_assignments(args.overrides)},
    )
    started = time.monotonic()
    rows: list[str] = []
    reached: tuple[int, float] | None = None
    step_seconds: list[float] = []

    def sink(event: events.Event) -> None:
        nonlocal reached
        if isinstance(event, events.Throughput):
            step_seconds.append(event.rollout_seconds + event.reward_seconds + event.train_seconds)
        if not isinstance(event, events.RolloutFinished):
            return
        per_prompt = {
            g.prompt.split()[1]: sum(s.reward for s in g.samples) / len(g.samples)
            for g in event.groups
        }
        rewards = [s.reward for g in event.groups for s in g.samples]
        mean = sum(rewards) / len(rewards)
        elapsed = time.monotonic() - started
        if reached is None and mean >= GOAL and min(per_prompt.values()) >= PER_PROMPT:
            reached = (event.step, elapsed)
        if event.step % 10 == 0:
            colours = " ".join(f"{k} {v:.2f}" for k, v in sorted(per_prompt.items()))
            rows.append(f"| {event.step} | {mean:.3f} | {colours} | {elapsed:.0f} |")
            print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as out:
        ended = run(recipe, sink, out_dir=Path(out))
    total = time.monotonic() - started
    steady = sorted(step_seconds[5:]) or step_seconds
    summary = (
        f"reached mean >= {GOAL} with every prompt >= {PER_PROMPT} at step {reached[0]} "
        f"after {reached[1]:.0f} s"
        if reached
        else f"did not reach mean >= {GOAL} with every prompt >= {PER_PROMPT}"
    )
    table = "\n".join(
        [
            heading("tiny-color learning", "CPU"),
            "",
            f"`bench/learning.py` {' '.join(args.overrides)}: {recipe.run.max_steps} GRPO steps of "
            f"{recipe.layout.rollout_batch_size} prompts x {recipe.layout.n_samples_per_prompt} "
            f"samples, run {ended.status} in {total:.0f} s; median step "
            f"{steady[len(steady) // 2]:.2f} s; {summary}.",
            "",
            "| step | mean reward | per prompt | seconds |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
