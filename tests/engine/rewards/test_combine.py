"""The weighted sum keeps every part of the reward."""

import numpy as np
import pytest

from engine.recipe import RewardSpec
from engine.rewards import RewardOutput, WeightedSum, build_rewards

IMAGES = np.zeros((3, 2, 2, 3), dtype=np.uint8)
PROMPTS = ["a black image"] * 3
METADATA = [{}] * 3


def fixed(scores, **components):
    def reward(images, prompts, metadata):
        return RewardOutput(
            np.asarray(scores, dtype=np.float64),
            {k: np.asarray(v, dtype=np.float64) for k, v in components.items()},
        )

    return reward


def test_weighted_sum_and_components():
    combined = WeightedSum(
        [
            ("a", 2.0, fixed([1.0, 0.0, 0.5], part=[9.0, 8.0, 7.0])),
            ("b", 0.5, fixed([0.0, 1.0, 1.0])),
            ("watched", 0.0, fixed([3.0, 3.0, 3.0])),
        ]
    )
    output = combined(IMAGES, PROMPTS, METADATA)
    # 2 x a + 0.5 x b + 0 x watched
    np.testing.assert_allclose(output.scores, [2.0, 0.5, 1.5])
    assert set(output.components) == {"a", "a.part", "b", "watched"}
    np.testing.assert_allclose(output.components["a.part"], [9.0, 8.0, 7.0])
    np.testing.assert_allclose(output.components["watched"], [3.0, 3.0, 3.0])


def test_a_reward_of_the_wrong_size_is_an_error():
    combined = WeightedSum([("short", 1.0, fixed([1.0, 1.0]))])
    with pytest.raises(ValueError, match="reward 'short' returned scores of shape"):
        combined(IMAGES, PROMPTS, METADATA)


def test_terms_must_be_present_and_unique():
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])
    with pytest.raises(ValueError, match="unique"):
        WeightedSum([("a", 1.0, fixed([1, 1, 1])), ("a", 1.0, fixed([1, 1, 1]))])


def test_build_from_the_recipe_rewards():
    combined = build_rewards([RewardSpec("color", 1.0), RewardSpec("color_pixel", 3.0)])
    output = combined(IMAGES, PROMPTS, METADATA)
    np.testing.assert_allclose(output.scores, [4.0, 4.0, 4.0])
    assert {"color", "color_pixel", "color.mean_red"} <= set(output.components)


def test_reward_output_checks_shapes():
    with pytest.raises(ValueError, match=r"scores must have shape \[B\]"):
        RewardOutput(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="component 'x' has shape"):
        RewardOutput(np.zeros(2), {"x": np.zeros(3)})


def test_model_rewards_combine_with_their_components():
    from engine.rewards.color import ColorReward
    from engine.rewards.ocr import OcrReward

    # The recogniser 'reads' the red channel's first value as a letter count of "aaaa".
    ocr = OcrReward(recognizer=lambda image: ["a" * int(image[0, 0, 0] // 64)])
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[1] = (255, 0, 0)
    prompts = ['a black sign "aaaa"', 'a red sign "aaaa"']
    output = WeightedSum([("ocr", 0.5, ocr), ("color", 2.0, ColorReward())])(
        images, prompts, [{}, {}]
    )
    # Image 0 reads "" (distance 4, ocr 0); image 1 reads "aaa" (distance 1, ocr 0.75).
    np.testing.assert_allclose(output.components["ocr"], [0.0, 0.75])
    np.testing.assert_allclose(output.components["ocr.distance"], [4.0, 1.0])
    np.testing.assert_allclose(output.components["color"], [1.0, 1.0])
    np.testing.assert_allclose(output.scores, [2.0, 0.5 * 0.75 + 2.0])
    assert set(output.components) == {
        "ocr",
        "ocr.distance",
        "color",
        "color.mean_red",
        "color.mean_green",
        "color.mean_blue",
    }
