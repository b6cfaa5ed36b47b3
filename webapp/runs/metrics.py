"""A run's metric series as the charts draw them: the run page, the compare page and the API.

Each charted event gets one small point when it is stored (``chart_point``, kept in
``ChartPoint``); a series is read from those points alone, never from the events' payloads or
the sample rows, so a run of thousands of rollouts charts in one short query. A series longer
than the chart can show is downsampled here (``downsample``): the chart gets at most ``points``
points, each standing for a run of consecutive steps, and a zoom asks again for a step range.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import TextField
from django.db.models.functions import Cast

from engine.events import StepMetrics
from webapp.runs.models import ChartPoint, Run

#: A train point's keys: the step and the trainer's own list of step metrics, so that a metric
#: the trainer adds is charted without being named here again.
TRAIN_KEYS = ("step", *StepMetrics._fields)

#: Which series each charted event type feeds.
SERIES = {
    "rollout_finished": "reward",
    "train_step_finished": "train",
    "evaluation_finished": "evaluation",
    "throughput": "throughput",
}

#: The points per series the dashboard's charts ask for: about their plots' width in pixels
#: (static/groupwise/charts.js), so downsampling further would show less.
CHART_POINTS = 500
#: The most points per series the metrics API gives when asked to downsample.
MAX_POINTS = 5000


def chart_point(kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """What the charts draw of an event of type ``kind`` (None for one they do not draw).

    ``reward``: the rollout's step, time, and the mean, population std and count of its samples'
    rewards, with each reward component's mean; ``train``: ``TRAIN_KEYS`` and time;
    ``evaluation``: step, time, mean reward and components; ``throughput``: the event's fields.
    """
    if kind == "rollout_finished":
        samples = [s for group in payload["groups"] for s in group["samples"]]
        rewards = [float(s["reward"]) for s in samples]
        components: dict[str, list[float]] = defaultdict(list)
        for sample in samples:
            for name, value in sample["reward_components"].items():
                components[name].append(float(value))
        # An empty rollout (no samples) has no mean: None, which JSON can carry (NaN cannot).
        mean = std = None
        if rewards:
            mean = sum(rewards) / len(rewards)
            std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
        return {
            "step": payload["step"],
            "time": payload["time"],
            "mean": mean,
            "std": std,
            "count": len(rewards),
            "components": {name: sum(v) / len(v) for name, v in components.items()},
        }
    if kind == "train_step_finished":
        return {**{k: payload.get(k) for k in TRAIN_KEYS}, "time": payload["time"]}
    if kind == "evaluation_finished":
        return {
            "step": payload["step"],
            "time": payload["time"],
            "reward_mean": payload["reward_mean"],
            "components": payload["reward_components"],
        }
    if kind == "throughput":
        return {k: v for k, v in payload.items() if k not in ("type", "schema_version")}
    return None


def downsample(series: str, points: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """``points`` (in step order) as at most ``limit`` points, each merging a run of consecutive
    ones; ``points`` itself when it has no more than ``limit``.

    A merged point carries the last merged step (so the newest point is the newest step),
    ``first_step`` and ``span`` (how many it merged), and the mean of each number. A reward point
    is exact over the samples it stands for: the count-weighted mean and the pooled population
    std (the square root of the mean of std² + mean² less the new mean², equal to the std of all
    the merged samples' rewards). Keys ending in ``_min`` / ``_max`` keep the smallest / largest.
    """
    if len(points) <= limit:
        return points
    merged = []
    for bucket in range(limit):
        chunk = points[bucket * len(points) // limit : (bucket + 1) * len(points) // limit]
        point = _merge_reward(chunk) if series == "reward" else _merge_means(chunk)
        point.update(step=chunk[-1]["step"], first_step=chunk[0]["step"], span=len(chunk))
        if "time" in chunk[-1]:
            point["time"] = chunk[-1]["time"]
        merged.append(point)
    return merged


def _merge_reward(chunk: list[dict[str, Any]]) -> dict[str, Any]:
    chunk = [p for p in chunk if p["count"]]
    count = sum(p["count"] for p in chunk)
    if count == 0:
        return {"mean": None, "std": None, "count": 0, "components": {}}
    mean = sum(p["mean"] * p["count"] for p in chunk) / count
    second_moment = sum((p["std"] ** 2 + p["mean"] ** 2) * p["count"] for p in chunk) / count
    weights: dict[str, float] = defaultdict(float)
    sums: dict[str, float] = defaultdict(float)
    for p in chunk:
        for name, value in p.get("components", {}).items():
            weights[name] += p["count"]
            sums[name] += value * p["count"]
    return {
        "mean": mean,
        # Rounding can leave the difference a hair below zero for a flat bucket.
        "std": math.sqrt(max(0.0, second_moment - mean**2)),
        "count": count,
        "components": {name: sums[name] / weights[name] for name in sums},
    }


def _merge_means(chunk: list[dict[str, Any]]) -> dict[str, Any]:
    point: dict[str, Any] = {}
    for key in chunk[0]:
        if key in ("step", "time"):
            continue
        if key == "components":
            point[key] = _mean_by_name(p.get("components", {}) for p in chunk)
            continue
        values = [p[key] for p in chunk if isinstance(p.get(key), int | float)]
        if not values:
            point[key] = None
        elif key.endswith("_min"):
            point[key] = min(values)
        elif key.endswith("_max"):
            point[key] = max(values)
        else:
            point[key] = sum(values) / len(values)
    return point


def _mean_by_name(dicts: Iterable[dict[str, float]]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for name, value in d.items():
            values[name].append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


def run_metrics(
    run: Run, *, points: int | None = None, first: int | None = None, last: int | None = None
) -> dict[str, Any]:
    """The series the charts draw, from the run's non-superseded chart points.

    Each of ``reward``, ``train``, ``evaluation`` and ``throughput`` is a list of points in step
    order (``chart_point``), only steps in ``first``..``last`` when given, downsampled to at most
    ``points`` each when given. ``steps`` is the first and last step charted in the whole run (a
    zoomed chart's way back), ``downsampled`` whether any series was.
    """
    live = ChartPoint.objects.filter(run=run, superseded=False)
    bounds = [
        live.order_by(order).values_list("step", flat=True).first() for order in ("step", "-step")
    ]
    if first is not None:
        live = live.filter(step__gte=first)
    if last is not None:
        live = live.filter(step__lte=last)
    # One JSON array decoded at once: a long run's thousands of points decode in a few ms, where
    # the JSON field's per-row decoding costs several times that.
    rows = live.order_by("series", "step", "id").annotate(text=Cast("values", TextField()))
    kinds, texts = [], []
    for series, text in rows.values_list("series", "text"):
        kinds.append(series)
        texts.append(text)
    decoded = json.loads("[" + ",".join(texts) + "]")
    result: dict[str, Any] = {name: [] for name in SERIES.values()}
    for series, point in zip(kinds, decoded, strict=True):
        result[series].append(point)
    downsampled = False
    if points is not None:
        for name in SERIES.values():
            downsampled |= len(result[name]) > points
            result[name] = downsample(name, result[name], points)
    result["steps"] = bounds if bounds[0] is not None else None
    result["downsampled"] = downsampled
    return result
