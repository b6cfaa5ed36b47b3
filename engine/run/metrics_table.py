"""A run's metrics as a table: one row per optimizer step, for CSV and JSON export.

``metric_rows(records)`` reads event records as plain data (``Event.to_dict()`` as the JSONL
holds them, or the payloads the web stores) in the order they were emitted. A row joins an
optimizer step's train metrics with the rollout it trained on (its ``rollout_index``): reward
mean and population std over the rollout's samples, and the evaluation taken right after that
step, where there was one. Records a resume superseded are left out: a ``run_started`` that
resumes from step s drops the steps after s and the rollouts taken at or after s, as the web
sink marks them (DESIGN.md section 3), so the same file gives the same table either way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from engine.events import StepMetrics
from engine.plain import decode_float, encode_float

#: A train step's columns: its step, the rollout it trained on, and its ``StepMetrics``.
_TRAIN = ("step", "rollout_index", *StepMetrics._fields)
#: The columns, in order: train metrics, then the rollout's and the evaluation's rewards.
COLUMNS = (*_TRAIN, "reward_mean", "reward_std", "eval_reward_mean")


def metric_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per optimizer step with every column of ``COLUMNS``, in step order; a value
    the run did not record (no evaluation at that step) is None."""
    train: dict[int, dict[str, Any]] = {}
    rollouts: dict[int, tuple[int, list[float]]] = {}
    evaluations: dict[int, float] = {}
    for record in records:
        kind = record.get("type")
        if kind == "run_started":
            start = int(record.get("start_step", 0))
            train = {s: row for s, row in train.items() if s <= start}
            evaluations = {s: v for s, v in evaluations.items() if s <= start}
            rollouts = {i: r for i, r in rollouts.items() if r[0] < start}
        elif kind == "train_step_finished":
            train[int(record["step"])] = {key: _number(record.get(key)) for key in _TRAIN}
        elif kind == "rollout_finished":
            rewards = [
                _number(sample["reward"])
                for group in record["groups"]
                for sample in group["samples"]
            ]
            rollouts[int(record["rollout_index"])] = (int(record["step"]), rewards)
        elif kind == "evaluation_finished":
            evaluations[int(record["step"])] = _number(record["reward_mean"])
    rows = []
    for step in sorted(train):
        row = dict(train[step])
        rewards = rollouts.get(row["rollout_index"], (0, []))[1]
        row["reward_mean"], row["reward_std"] = _mean_std(rewards)
        row["eval_reward_mean"] = evaluations.get(step)
        rows.append(row)
    return rows


def rows_as_json(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as strict JSON data: non-finite numbers as the strings "NaN" / "Infinity"
    (as in events), so a browser's ``JSON.parse`` reads them."""
    return [{key: _json_value(value) for key, value in row.items()} for row in rows]


def csv_lines(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The CSV text of ``rows``, a header then one line per row; None is an empty cell and
    floats keep every digit (``repr``), so a reader gets back the numbers exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield out.getvalue()
    for row in rows:
        out.seek(0)
        out.truncate()
        writer.writerow(["" if row.get(c) is None else _json_value(row[c]) for c in COLUMNS])
        yield out.getvalue()


def dumps(rows: Iterable[Mapping[str, Any]]) -> str:
    """The JSON text of ``rows`` (a list of objects)."""
    return json.dumps(rows_as_json(rows), allow_nan=False)


def _number(value: Any) -> Any:
    return decode_float(value) if isinstance(value, str) else value


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    # fsum keeps the sums exact, so the std of equal rewards is exactly 0.
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def _json_value(value: Any) -> Any:
    return encode_float(value) if isinstance(value, float) else value
