"""Which checkpoints a run keeps: the newest ``keep_last`` and the best by evaluation reward.

Resuming needs only the newest checkpoint; the best one is what a user exports. Everything else
is disk the run no longer needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def checkpoints_to_keep(
    steps: Iterable[int], eval_rewards: Mapping[int, float], keep_last: int
) -> set[int]:
    """The steps of the checkpoints to keep; ``keep_last=0`` keeps all.

    ``eval_rewards`` maps a step to the mean evaluation reward measured at it; the best checkpoint
    is the one saved at the step with the highest such reward (the later step on a tie), so a
    checkpoint without an evaluation at its step is never "the best".
    """
    if keep_last < 0:
        raise ValueError(f"keep_last={keep_last} must be >= 0 (0 keeps every checkpoint)")
    ordered = sorted(set(steps))
    if keep_last == 0:
        return set(ordered)
    keep = set(ordered[-keep_last:])
    evaluated = [step for step in ordered if step in eval_rewards]
    if evaluated:
        keep.add(max(evaluated, key=lambda step: (eval_rewards[step], step)))
    return keep
