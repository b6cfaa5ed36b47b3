"""Data-parallel ranks: where a rollout's time goes with one trainer process and with two.

    python bench/ranks.py [--rollouts 3] [--prompts 4] [--steps 8]

Trains the tiny-color recipe (P=--prompts x G=4, microgroups of 4) for --rollouts rollouts three
ways through ``engine.run.ranks.train``: one process (num_gpus=1), two gloo ranks holding whole
copies (fsdp=false) and two gloo ranks sharding the transformer (fsdp=true). In both two-rank
runs each rank generates half of every rollout (``engine.rollout.spread``) and trains its half
of every optimizer step. The first rollout warms up; the table reports the fastest later one's
generation, reward and update seconds from the run's ``Throughput`` events, and whole rollouts
per second relative to one process. On CPU the ranks share the host's cores (each gets
cores / 2 threads), so the ratio shows the cost of the collectives rather than a GPU's gain. The
table is printed and appended to docs/performance.md with the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import events  # noqa: E402
from engine.overrides import apply_overrides  # noqa: E402
from engine.presets import PRESETS  # noqa: E402
from engine.run.ranks import train  # noqa: E402

CONFIGURATIONS = (
    ("one process", 1, True),
    ("two ranks, whole copies", 2, False),
    ("two ranks, FSDP", 2, True),
)


def measure(gpus: int, fsdp: bool, rollouts: int, prompts: int, steps: int) -> events.Throughput:
    """The fastest rollout after the first one, as its Throughput event reported it."""
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            "rollout_batch_size": prompts,
            "num_inference_steps": steps,
            "num_gpus": gpus,
            "fsdp": fsdp,
            "max_steps": rollouts,
            "eval_every": 0,
            "checkpoint_every": 0,
        },
    )
    seen: list[events.Event] = []
    with tempfile.TemporaryDirectory() as out:
        ended = train(recipe, seen.append, out_dir=Path(out))
    if ended.status != "finished":
        raise SystemExit(f"num_gpus={gpus} fsdp={fsdp}: {ended.status}: {ended.error}")
    throughputs = [e for e in seen if isinstance(e, events.Throughput)][1:]
    return min(throughputs, key=lambda e: e.rollout_seconds + e.train_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts per run (>= 2)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout (P)")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps")
    args = parser.parse_args()
    rows = []
    baseline = None
    for name, gpus, fsdp in CONFIGURATIONS:
        best = measure(gpus, fsdp, max(args.rollouts, 2), args.prompts, args.steps)
        total = best.rollout_seconds + best.reward_seconds + best.train_seconds
        rate = 1 / total
        baseline = baseline or rate
        rows.append(
            f"| {name} | {best.rollout_seconds:.2f} | {best.reward_seconds:.2f} | "
            f"{best.train_seconds:.2f} | {best.images_per_second:.1f} | {rate / baseline:.2f}x |"
        )
    header = (
        heading("Data-parallel ranks") + "\n\n"
        f"`bench/ranks.py`: tiny-color, P={args.prompts} x G=4 (M=4), {args.steps} steps, "
        "gloo on CPU; the fastest rollout after the first.\n\n"
        "| trainer | generation s | reward s | update s | images/s | rollouts/s vs one |\n"
        "|---|---|---|---|---|---|\n"
    )
    table = header + "\n".join(rows) + "\n"
    publish(table)


if __name__ == "__main__":
    main()
