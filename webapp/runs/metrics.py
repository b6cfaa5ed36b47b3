"""A run's metric series as the charts draw them: the run page, the compare page and the API."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from engine.events import StepMetrics
from webapp.runs.models import Event, Run

#: A train point's keys: the step and the trainer's own list of step metrics, so that a metric
#: the trainer adds is charted without being named here again.
TRAIN_KEYS = ("step", *StepMetrics._fields)


def run_metrics(run: Run) -> dict[str, Any]:
    """The series the charts draw, from the run's stored, non-superseded records.

    ``reward``: per rollout step, the mean, (population) std and count of its samples' rewards;
    ``train``: one point per optimizer step with ``TRAIN_KEYS``; ``evaluation``: per evaluation,
    its step, mean reward and reward components; ``throughput``: each throughput event's fields.
    """
    rewards: dict[int, list[float]] = defaultdict(list)
    for step, reward in run.samples.filter(superseded=False).values_list("step", "reward"):
        rewards[step].append(reward)
    reward_series = []
    for step in sorted(rewards):
        values = rewards[step]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        reward_series.append({"step": step, "mean": mean, "std": std, "count": len(values)})
    live = Event.objects.filter(run=run, superseded=False)

    def payloads(kind: str) -> list[dict[str, Any]]:
        return [
            payload
            for payload in live.filter(type=kind).order_by("seq").values_list("payload", flat=True)
        ]

    return {
        "reward": reward_series,
        "train": [{k: p.get(k) for k in TRAIN_KEYS} for p in payloads("train_step_finished")],
        "evaluation": [
            {
                "step": p["step"],
                "reward_mean": p["reward_mean"],
                "components": p["reward_components"],
            }
            for p in payloads("evaluation_finished")
        ],
        "throughput": [
            {k: v for k, v in p.items() if k not in ("type", "schema_version")}
            for p in payloads("throughput")
        ],
    }
