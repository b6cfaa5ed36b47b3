"""The colour rewards on synthetic images whose answers are known."""

import math

import numpy as np
import pytest

from engine.rewards.color import COLORS, ColorReward, PixelColorReward, target_color


def solid(rgb, size=4):
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (size, size, 3)).copy()


def halves(top, bottom, size=4):
    image = solid(top, size)
    image[size // 2 :] = bottom
    return image


def score(reward, images, prompts, metadata=None):
    batch = np.stack(images)
    return reward(batch, prompts, metadata or [{}] * len(prompts))


@pytest.mark.parametrize("name", ["red", "green", "blue", "yellow", "white", "black", "pink"])
def test_the_named_colour_scores_one(name):
    for reward in (ColorReward(), PixelColorReward()):
        output = score(reward, [solid(COLORS[name])], [f"a {name} image"])
        np.testing.assert_allclose(output.scores, [1.0])


def test_the_opposite_corner_of_the_cube_scores_zero():
    output = score(ColorReward(), [solid((0, 0, 0)), solid((255, 255, 255))], ["white", "black"])
    np.testing.assert_allclose(output.scores, [0.0, 0.0], atol=1e-12)


def test_known_distances():
    output = score(
        ColorReward(),
        [solid((128, 128, 128)), solid((0, 255, 0)), halves((255, 0, 0), (0, 0, 255))],
        ["a black image", "a red image", "a red image"],
    )
    expected = [
        # Grey 128 to black: distance sqrt(3) x 128/255 of the diagonal sqrt(3).
        1 - 128 / 255,
        # Green to red: two unit sides, sqrt(2) of sqrt(3).
        1 - math.sqrt(2) / math.sqrt(3),
        # Half red, half blue averages to (0.5, 0, 0.5): sqrt(0.5) from red.
        1 - math.sqrt(0.5) / math.sqrt(3),
    ]
    np.testing.assert_allclose(output.scores, expected)


def test_the_mean_colour_is_reported():
    output = score(ColorReward(), [halves((255, 0, 0), (0, 0, 255))], ["a red image"])
    np.testing.assert_allclose(output.components["mean_red"], [0.5])
    np.testing.assert_allclose(output.components["mean_green"], [0.0])
    np.testing.assert_allclose(output.components["mean_blue"], [0.5])


def test_the_per_pixel_variant_is_stricter():
    # Half black, half white averages to grey, the target: the mean-colour reward is nearly
    # satisfied, but every pixel is half the diagonal (127.5 or 128 of 255) from grey.
    image = halves((0, 0, 0), (255, 255, 255))
    mean_colour = score(ColorReward(), [image], ["a gray image"]).scores[0]
    per_pixel = score(PixelColorReward(), [image], ["a gray image"]).scores[0]
    assert mean_colour == pytest.approx(1 - 0.5 / 255)  # mean 127.5 vs 128
    assert per_pixel == pytest.approx(0.5 * (1 - 128 / 255) + 0.5 * (1 - 127 / 255))


def test_scores_fall_smoothly_with_distance():
    reds = [solid((255 - k, 0, 0)) for k in range(0, 256, 15)]
    scores = score(ColorReward(), reds, ["a red image"] * len(reds)).scores
    assert np.all(np.diff(scores) < 0)
    assert len(set(scores.tolist())) == len(reds)


def test_the_colour_word_is_found_case_insensitively_and_whole():
    assert target_color("A bored BLUE fox", {}).tolist() == [0.0, 0.0, 1.0]
    assert target_color("grey", {}).tolist() == target_color("gray", {}).tolist()
    # The first named colour wins.
    assert target_color("a red and green flag", {}).tolist() == [1.0, 0.0, 0.0]


def test_metadata_overrides_the_prompt():
    assert target_color("a red image", {"color": "blue"}).tolist() == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(target_color("anything", {"color": [255, 0, 51]}), [1, 0, 0.2])


def test_bad_targets_and_batches_are_errors():
    with pytest.raises(ValueError, match="names no colour"):
        target_color("a cat", {})
    with pytest.raises(ValueError, match="metadata colour 'teal' is unknown"):
        target_color("a cat", {"color": "teal"})
    with pytest.raises(ValueError, match=r"three values in 0\.\.255"):
        target_color("a cat", {"color": [300, 0, 0]})
    with pytest.raises(ValueError, match="uint8"):
        ColorReward()(np.zeros((1, 4, 4, 3), dtype=np.float32), ["red"], [{}])
    with pytest.raises(ValueError, match="2 images need 2 prompts"):
        ColorReward()(np.zeros((2, 4, 4, 3), dtype=np.uint8), ["red"], [{}])
