"""Long synthetic runs, for trying and measuring the dashboard at a real run's size without
training: ``manage.py synthesize_run`` (bench/long_run.py and the long-run browser test use it).

The events are real engine events, stored as the web sink stores them (the same payloads, event
rows, chart points and sample rows, through ``sink.chart_row`` and ``sink.sample_row``), but in
bulk, and every rollout's samples share one set of image files (one per prompt and sample
index, written once) instead of writing tens of thousands of PNGs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from PIL import Image

from engine.events import (
    EvalSample,
    EvaluationFinished,
    Event,
    Health,
    HealthCheck,
    PromptGroup,
    RolloutFinished,
    Sample,
    StepMetrics,
    Throughput,
    TrainStepFinished,
)
from webapp.runs import models
from webapp.runs.sink import chart_row, sample_row

#: Seconds between synthetic steps: the events' times, so a run's ETA and curves read sensibly.
STEP_SECONDS = 12.0
#: Steps stored per transaction: a few thousand rows each.
BATCH_STEPS = 20
#: The events' image: never stored (the samples point at the shared files), but an event must
#: carry a valid one.
PIXELS = np.zeros((8, 8, 3), dtype=np.uint8)


def synthesize(
    run: models.Run, rollouts: int, prompts: int, samples: int, *, eval_every: int = 50
) -> int:
    """Append ``rollouts`` steps to ``run`` after its last stored step: each a rollout of
    ``prompts`` groups of ``samples`` samples, a train step, throughput and health, and an
    evaluation every ``eval_every`` steps. Returns the run's last seq.

    Rewards rise with the step (a learning curve with noise, seeded by the step), so curves and
    their downsampled points have a shape to check.
    """
    media = _shared_images(run.pk, prompts, samples)
    seq = models.Event.objects.filter(run=run).aggregate(last=Max("seq"))["last"] or 0
    rolled = models.ChartPoint.objects.filter(run=run, series="reward").aggregate(last=Max("step"))
    first_step = 0 if rolled["last"] is None else rolled["last"] + 1
    start = datetime.now(UTC).timestamp() - STEP_SECONDS * rollouts
    for batch in range(first_step, first_step + rollouts, BATCH_STEPS):
        rows: list[models.Event] = []
        sample_rows: list[models.Sample] = []
        for step in range(batch, min(batch + BATCH_STEPS, first_step + rollouts)):
            when = start + STEP_SECONDS * (step - first_step)
            rollout = _rollout(step, prompts, samples, when)
            payload = rollout.to_dict(encode_image=lambda _image: None)
            for group, group_data in zip(rollout.groups, payload["groups"], strict=True):
                for sample, data in zip(group.samples, group_data["samples"], strict=True):
                    image, thumbnail = media[(group.group_index, sample.sample_index)]
                    data["image"] = settings.MEDIA_URL + image
                    data["thumbnail"] = settings.MEDIA_URL + thumbnail
                    sample_rows.append(sample_row(run.pk, rollout, group, sample, image, thumbnail))
            events: list[tuple[Event, dict[str, Any]]] = [(rollout, payload)]
            for event in _after_rollout(step, prompts * samples, when, eval_every):
                events.append((event, event.to_dict(encode_image=lambda _image: None)))
            for event, data in events:
                if isinstance(event, EvaluationFinished):
                    image, thumbnail = media[(0, 0)]
                    for sample_data in data["samples"]:
                        sample_data["image"] = settings.MEDIA_URL + image
                        sample_data["thumbnail"] = settings.MEDIA_URL + thumbnail
                seq += 1
                rows.append(
                    models.Event(
                        run_id=run.pk, seq=seq, type=event.type, step=data.get("step"),
                        payload=data, time=datetime.fromtimestamp(event.time, tz=UTC),
                    )
                )  # fmt: skip
        with transaction.atomic():
            models.Event.objects.bulk_create(rows)
            models.ChartPoint.objects.bulk_create(
                point for point in map(chart_row, rows) if point is not None
            )
            models.Sample.objects.bulk_create(sample_rows, batch_size=2000)
            models.Run.objects.filter(pk=run.pk).update(step=step + 1)
    return seq


def _reward(step: int, group: int, index: int) -> float:
    rng = np.random.default_rng([step, group + 1, index])
    return float(np.clip(1 - math.exp(-step / 800) + rng.normal(0, 0.1), 0, 1))


def _rollout(step: int, prompts: int, samples: int, when: float) -> RolloutFinished:
    groups = []
    for g in range(prompts):
        rewards = [_reward(step, g, i) for i in range(samples)]
        mean = sum(rewards) / samples
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / samples) or 1.0
        members = tuple(
            Sample(
                sample_index=i, seed=step * 1000 + g * samples + i, image=PIXELS,
                reward=r, reward_components={"color": r}, advantage=(r - mean) / std,
            )
            for i, r in enumerate(rewards)
        )  # fmt: skip
        groups.append(PromptGroup(group_index=g, prompt=f"prompt {g:03d}", samples=members))
    return RolloutFinished(
        step=step, rollout_index=step, rollout_seed=step, sde_window=(0, 1), groups=tuple(groups),
        time=when,
    )  # fmt: skip


def _after_rollout(step: int, images: int, when: float, eval_every: int) -> list[Event]:
    loss = 0.5 * math.exp(-step / 1000)
    events: list[Event] = [
        TrainStepFinished(
            step=step + 1, rollout_index=step, time=when + 8,
            **StepMetrics(
                loss=loss, policy_loss=loss, kl=0.001, clip_fraction=0.05, ratio_mean=1.0,
                ratio_min=0.9, ratio_max=1.1, grad_norm=0.4, lr=1e-4,
            )._asdict(),
        ),
        Throughput(
            step=step, images_per_second=images / 8, rollout_seconds=6.0, reward_seconds=1.0,
            train_seconds=3.0, weight_sync_seconds=0.5, time=when + 9,
        ),
        Health(
            step=step, time=when + 9,
            checks=(HealthCheck(name="reward spread", status="pass", message="groups vary"),),
        ),
    ]  # fmt: skip
    if eval_every and (step + 1) % eval_every == 0:
        reward = _reward(step, -1, 0)
        events.append(
            EvaluationFinished(
                step=step + 1, reward_mean=reward, reward_components={"color": reward},
                samples=(
                    EvalSample(
                        prompt="held-out prompt", seed=7, image=PIXELS,
                        reward=reward, reward_components={"color": reward},
                    ),
                ),
                time=when + 10,
            )
        )  # fmt: skip
    return events


def _shared_images(run_id: int, prompts: int, samples: int) -> dict[Any, tuple[str, str]]:
    """One image and thumbnail per (group, sample index) under the run's media folder, written
    once: paths relative to MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT)
    folder = f"runs/{run_id}/synthetic"
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = {}
    for g in range(prompts):
        for i in range(samples):
            image, thumbnail = (
                f"{folder}/g{g:03d}-s{i:03d}.png",
                f"{folder}/g{g:03d}-s{i:03d}.thumb.png",
            )
            if not (root / image).exists():
                hue = np.array([(37 * g) % 256, (91 * i) % 256, 128], dtype=np.uint8)
                picture = Image.fromarray(np.broadcast_to(hue, (64, 64, 3)).copy())
                picture.save(root / image)
                picture.thumbnail((32, 32))
                picture.save(root / thumbnail)
            paths[(g, i)] = (image, thumbnail)
    return paths
