"""The microgroup sweep on the tiny model: one row per M, the same samples at every M."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.sweep import (
    SweepReport,
    SweepRow,
    sample_differences,
    sweep,
    sweep_sizes,
)
from tests.recipes import GROUPS_OF_FOUR


def recipe(**changes: Any) -> Recipe:
    # One prompt, G=4, four denoising steps (two stochastic), 16 x 16: a rollout is 4 images.
    small = {
        "rollout_batch_size": 1,
        **GROUPS_OF_FOUR,
        "num_inference_steps": 4,
        "height": 16,
        "width": 16,
    }
    return apply_overrides(PRESETS["tiny-color"].recipe, {**small, **changes})


@pytest.fixture(scope="module")
def swept() -> tuple[SweepReport, list[SweepRow]]:
    streamed: list[SweepRow] = []
    report = sweep(recipe(), sizes=[4, 1, 2], rollouts=1, on_result=streamed.append)
    return report, streamed


def test_one_row_per_size_streamed_as_it_finishes(
    swept: tuple[SweepReport, list[SweepRow]],
) -> None:
    report, streamed = swept
    assert report.sizes == (1, 2, 4), "sorted: the smallest M is the reference"
    assert [row.microgroup_size for row in report.rows] == [1, 2, 4]
    assert streamed == list(report.rows)
    for row in report.rows:
        assert row.images == 4
        # 4 samples in requests of M: 4 / M requests of 4 DiT forwards each.
        assert row.dit_forwards == 4 // row.microgroup_size * 4
        assert set(row.phase_seconds) == {"encode", "denoise", "decode", "reward"}
        assert row.replay_max_deviation is None
        # End to end includes the generation time, so it is never faster.
        assert row.end_to_end_images_per_second <= row.images_per_second
        assert row.iteration_seconds * row.end_to_end_images_per_second == pytest.approx(4)
        assert row.dit_forwards_per_second == pytest.approx(
            row.images_per_second * row.dit_forwards / row.images
        )
        assert row.peak_memory_bytes >= row.memory_growth_bytes >= 0
        assert row.peak_memory_bytes > 0
    assert report.machine.device == "cpu"
    assert report.machine.torch_version == torch.__version__
    assert report.recipe == recipe().to_dict()
    assert not report.update


def test_same_samples_at_every_size_and_the_best_is_the_fastest(
    swept: tuple[SweepReport, list[SweepRow]],
) -> None:
    report, _ = swept
    reference = report.rows[0]
    assert (reference.max_image_diff, reference.max_log_prob_diff) == (0, 0.0)
    for row in report.rows:
        # fp32 batch variance: one uint8 level at most, log-probs within 1e-4
        # (docs/single-prompt-multi-generation.md).
        assert row.max_image_diff <= 1
        assert row.max_log_prob_diff <= 1e-4
        assert row.same_samples
    assert report.within_tolerance == (1, 2, 4)
    fastest = max(report.rows, key=lambda row: row.end_to_end_images_per_second)
    assert report.best_size == fastest.microgroup_size


def test_report_round_trips_through_strict_json(
    swept: tuple[SweepReport, list[SweepRow]],
) -> None:
    report, _ = swept
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema_version"] == 1
    assert data["best_size"] == report.best_size
    assert data["machine"]["hostname"] == report.machine.hostname
    assert SweepReport.from_dict(data) == report

    broken = dataclasses.replace(report.rows[1], max_log_prob_diff=math.nan, same_samples=False)
    odd = dataclasses.replace(report, rows=(report.rows[0], broken, report.rows[2]))
    data = json.loads(json.dumps(odd.to_dict(), allow_nan=False))
    assert data["rows"][1]["max_log_prob_diff"] == "NaN"
    assert math.isnan(SweepReport.from_dict(data).rows[1].max_log_prob_diff)
    row = json.loads(json.dumps(broken.to_dict(), allow_nan=False))
    assert row == data["rows"][1]
    assert math.isnan(SweepRow.from_dict(row).max_log_prob_diff)
    with pytest.raises(ValueError, match="schema_version 2"):
        SweepReport.from_dict({**data, "schema_version": 2})


def test_invalid_sizes_and_rollouts_name_the_field_and_the_fix() -> None:
    with pytest.raises(RecipeError) as error:
        sweep(recipe(), sizes=[3, 4, 8], rollouts=0)
    assert [str(p) for p in error.value.problems] == [
        "sizes: diffusion_microgroup_size=3 does not divide n_samples_per_prompt=4: use 1, 2 or 4",
        "sizes: diffusion_microgroup_size=8 does not divide n_samples_per_prompt=4: use 1, 2 or 4",
        "rollouts: rollouts=0: sweep at least 1, e.g. 2",
    ]
    with pytest.raises(RecipeError, match="sizes: no microgroup size given: use some of 1, 2 or 4"):
        sweep_sizes(recipe(), [], 1)
    with pytest.raises(RecipeError, match=r"layout\.n_samples_per_prompt"):
        sweep_sizes(recipe(n_samples_per_prompt=1), None, 1)
    assert sweep_sizes(recipe(n_samples_per_prompt=16, micro_batch_size_sample=16), None, 1) == (
        1,
        2,
        4,
        8,
        16,
    )


def test_updates_start_every_size_from_the_same_weights() -> None:
    # Two rollouts: the second is sampled with weights trained on the first. Had a size started
    # from the weights the previous size left, its second rollout would differ (lr 1e-3 on the
    # whole tiny DiT moves images by many levels).
    report = sweep(recipe(), sizes=[2, 4], rollouts=2, update=True)
    assert report.update
    for row in report.rows:
        assert row.same_samples, row
        assert set(row.phase_seconds) == {"encode", "denoise", "decode", "reward", "train"}
        assert row.phase_seconds["train"] > 0
        assert row.replay_max_deviation is not None and row.replay_max_deviation < 1e-5
        assert row.images == 8


def samples(*values: tuple[int, int, list[int], list[float]]) -> dict[Any, Any]:
    return {
        (rollout, seed): (np.array(image, dtype=np.uint8), torch.tensor(log_probs))
        for rollout, seed, image, log_probs in values
    }


def test_sample_differences_by_hand() -> None:
    reference = samples((0, 7, [10, 200], [-1.0, -2.0]), (0, 8, [0, 255], [0.5, math.nan]))
    other = samples((0, 7, [12, 199], [-1.0, -2.25]), (0, 8, [0, 255], [0.5, math.nan]))
    # |10 - 12| = 2 levels (no uint8 wrap-around); |-2 - -2.25| = 0.25; NaN matches NaN.
    assert tuple(sample_differences(reference, other)) == (2, 0.25, True)
    one_nan = samples((0, 7, [10, 200], [-1.0, math.nan]), (0, 8, [0, 255], [0.5, math.nan]))
    differences = sample_differences(reference, one_nan)
    assert math.isnan(differences.max_log_prob_diff)
    missing = samples((0, 7, [10, 200], [-1.0, -2.0]), (1, 8, [0, 255], [0.5, math.nan]))
    assert sample_differences(reference, missing).same_keys is False
