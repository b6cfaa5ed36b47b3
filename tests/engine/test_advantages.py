"""Advantages of hand-made groups, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from engine.advantages import EPSILON, group_advantages


def test_per_group_std() -> None:
    # Group 0: rewards 1, 3 -> mean 2, population std 1 -> advantages -1/(1+eps), +1/(1+eps).
    # Group 1: rewards 0, 0.5 -> mean 0.25, std 0.25 -> -0.25/(0.25+eps), +0.25/(0.25+eps).
    result = group_advantages(
        torch.tensor([[1.0, 3.0], [0.0, 0.5]]), globalize_reward_std=False, adv_clip_max=5.0
    )
    expected = torch.tensor(
        [
            [-1 / (1 + EPSILON), 1 / (1 + EPSILON)],
            [-0.25 / (0.25 + EPSILON), 0.25 / (0.25 + EPSILON)],
        ]
    )
    torch.testing.assert_close(result.advantages, expected)
    assert result.zero_std_groups == ()


def test_global_std() -> None:
    # All four rewards 1, 3, 0, 0.5: mean 1.125; squared deviations 0.015625, 3.515625,
    # 1.265625, 0.390625 -> variance 5.1875 / 4 = 1.296875, std = sqrt(1.296875).
    std = math.sqrt(1.296875)
    result = group_advantages(
        torch.tensor([[1.0, 3.0], [0.0, 0.5]]), globalize_reward_std=True, adv_clip_max=5.0
    )
    expected = torch.tensor([[-1.0, 1.0], [-0.25, 0.25]]) / (std + EPSILON)
    torch.testing.assert_close(result.advantages, expected)


def test_clipping_and_zero_std_groups() -> None:
    # Group 0 is constant: zero advantages, reported. Group 1: one outlier among near-equal
    # values. With rewards 0,0,0,1 the mean is 0.25 and std sqrt(3)/4 ~ 0.433: the outlier's
    # advantage 0.75/0.433 ~ 1.73 is clipped to 1.5, the others are -0.577.
    result = group_advantages(
        torch.tensor([[0.7, 0.7, 0.7, 0.7], [0.0, 0.0, 0.0, 1.0]]),
        globalize_reward_std=False,
        adv_clip_max=1.5,
    )
    assert result.zero_std_groups == (0,)
    assert torch.equal(result.advantages[0], torch.zeros(4))
    low = -0.25 / (math.sqrt(3) / 4 + EPSILON)
    torch.testing.assert_close(result.advantages[1], torch.tensor([low, low, low, 1.5]))


def test_rejects_groups_of_one() -> None:
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.zeros(3, 1), globalize_reward_std=False, adv_clip_max=5.0)
