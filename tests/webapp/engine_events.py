"""Engine events for web tests, stored through the real sink (``store_event``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.events import (
    EvalSample,
    EvaluationFinished,
    PromptGroup,
    RolloutFinished,
    Sample,
    Throughput,
    TrainStepFinished,
)
from webapp.runs.models import Event
from webapp.runs.sink import store_event

#: The default rollout: two prompts of two samples, rewards 0, 0.25 | 0.5, 0.75.
REWARDS = ((0.0, 0.25), (0.5, 0.75))
PROMPTS = ("a red image", "a blue image")


def rollout(
    step: int,
    rollout_index: int,
    rewards: Sequence[Sequence[float]] = REWARDS,
    prompts: Sequence[str] = PROMPTS,
) -> RolloutFinished:
    """A rollout of ``len(rewards)`` groups: group g's samples have rewards ``rewards[g]``, a
    ``color`` component equal to it, seeds 1000 + 2g + i and 8x8 images of grey 40(2g + i)."""
    groups = []
    for g, (prompt, group_rewards) in enumerate(zip(prompts, rewards, strict=False)):
        samples = [
            Sample(
                sample_index=i,
                seed=1000 + g * 2 + i,
                image=np.full((8, 8, 3), 40 * (g * 2 + i), dtype=np.uint8),
                reward=reward,
                reward_components={"color": reward},
                advantage=float(i * 2 - 1),
            )
            for i, reward in enumerate(group_rewards)
        ]
        groups.append(PromptGroup(group_index=g, prompt=prompt, samples=tuple(samples)))
    return RolloutFinished(
        step=step, rollout_index=rollout_index, rollout_seed=7, sde_window=(0, 1),
        groups=tuple(groups),
    )  # fmt: skip


def train(
    step: int, loss: float = 0.1, ratio: tuple[float, float] = (1.0, 1.0)
) -> TrainStepFinished:
    """An optimizer step's metrics: ``loss`` (policy loss too) and ratio range ``ratio``."""
    return TrainStepFinished(
        step=step, rollout_index=step - 1, loss=loss, policy_loss=loss, kl=0.0,
        clip_fraction=0.0, ratio_mean=sum(ratio) / 2, ratio_min=ratio[0], ratio_max=ratio[1],
        grad_norm=0.5, lr=1e-3,
    )  # fmt: skip


def evaluation(step: int, reward: float) -> EvaluationFinished:
    """An evaluation of one prompt, one sample of reward ``reward``."""
    sample = EvalSample(
        prompt="a green image", seed=5, image=np.zeros((8, 8, 3), dtype=np.uint8),
        reward=reward, reward_components={"color": reward},
    )  # fmt: skip
    return EvaluationFinished(
        step=step, reward_mean=reward, reward_components={"color": reward}, samples=(sample,)
    )


def throughput(step: int, rollout_seconds: float) -> Throughput:
    return Throughput(
        step=step, images_per_second=4.0 / rollout_seconds, rollout_seconds=rollout_seconds,
        reward_seconds=0.1, train_seconds=0.2, weight_sync_seconds=0.0,
    )  # fmt: skip


def store(run_id: int, *events: object) -> None:
    """Store ``events`` as the run's next events, as the live sink does."""
    last = Event.objects.filter(run_id=run_id).order_by("-seq").values_list("seq", flat=True)
    seq = (last.first() or 0) + 1
    for offset, event in enumerate(events):
        store_event(run_id, seq + offset, event)  # type: ignore[arg-type]
