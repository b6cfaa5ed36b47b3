"""The metrics table: one row per optimizer step, rewards of the rollout it trained on,
superseded records left out, non-finite numbers kept strict."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from engine import events
from engine.run.metrics_table import COLUMNS, csv_lines, dumps, metric_rows


def train(step: int, rollout: int, loss: float = 0.5) -> dict[str, Any]:
    return events.TrainStepFinished(
        step=step, rollout_index=rollout, loss=loss, policy_loss=loss, kl=0.01 * step,
        clip_fraction=0.25, ratio_mean=1.0, ratio_min=0.9, ratio_max=1.1, grad_norm=2.0,
        lr=1e-3,
    ).to_dict()  # fmt: skip


def rollout(step: int, index: int, rewards: list[float]) -> dict[str, Any]:
    return {
        "type": "rollout_finished",
        "step": step,
        "rollout_index": index,
        "groups": [
            {"group_index": 0, "samples": [{"reward": r} for r in rewards[:2]]},
            {"group_index": 1, "samples": [{"reward": r} for r in rewards[2:]]},
        ],
    }


def test_rows_join_train_steps_with_their_rollout_and_evaluation() -> None:
    records = [
        {"type": "run_started", "start_step": 0},
        rollout(0, 0, [0.0, 1.0, 2.0, 3.0]),
        train(1, 0),
        train(2, 0),
        {"type": "evaluation_finished", "step": 2, "reward_mean": 0.75},
        rollout(2, 1, [1.0, 1.0, 1.0, 1.0]),
        train(3, 1),
    ]
    rows = metric_rows(records)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(set(row) == set(COLUMNS) for row in rows)
    # Rewards 0, 1, 2, 3: mean 1.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4.
    assert rows[0]["reward_mean"] == 1.5 and rows[1]["reward_mean"] == 1.5
    assert math.isclose(rows[0]["reward_std"], math.sqrt(1.25), rel_tol=1e-15)
    assert (rows[2]["reward_mean"], rows[2]["reward_std"]) == (1.0, 0.0)
    assert [row["eval_reward_mean"] for row in rows] == [None, 0.75, None]
    assert rows[1]["kl"] == 0.02 and rows[0]["lr"] == 1e-3


def test_a_resume_supersedes_what_came_after_its_checkpoint() -> None:
    records = [
        {"type": "run_started", "start_step": 0},
        rollout(0, 0, [0.0, 0.0, 1.0, 1.0]),
        train(1, 0, loss=1.0),
        {"type": "evaluation_finished", "step": 1, "reward_mean": 0.1},
        rollout(1, 1, [5.0, 5.0, 5.0, 5.0]),
        train(2, 1, loss=2.0),
        {"type": "evaluation_finished", "step": 2, "reward_mean": 0.2},
        # Resumed from the checkpoint of step 1: rollout 1 and step 2 are re-run.
        {"type": "run_started", "start_step": 1},
        rollout(1, 1, [3.0, 3.0, 3.0, 3.0]),
        train(2, 1, loss=3.0),
    ]
    rows = metric_rows(records)
    assert [(row["step"], row["loss"]) for row in rows] == [(1, 1.0), (2, 3.0)]
    assert rows[1]["reward_mean"] == 3.0
    assert [row["eval_reward_mean"] for row in rows] == [0.1, None]


def test_non_finite_numbers_and_csv_round_trip() -> None:
    rows = metric_rows([rollout(0, 0, [0.1, 0.2, 0.3, 0.7]), train(1, 0, loss=math.nan)])
    data = json.loads(dumps(rows))
    assert data[0]["loss"] == "NaN"
    text = "".join(csv_lines(rows))
    (read,) = list(csv.DictReader(io.StringIO(text)))
    assert list(read) == list(COLUMNS)
    assert read["loss"] == "NaN" and read["eval_reward_mean"] == ""
    assert float(read["reward_mean"]) == rows[0]["reward_mean"]  # every digit kept
