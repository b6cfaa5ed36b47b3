"""The colour reward of the tiny CPU demo: does the image have the colour the prompt names?

Smooth by design: the score falls linearly with the RGB distance, so every sample of a group gets
a different score and GRPO has a signal from the first rollout on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.rewards.base import Images, RewardOutput, check_batch

#: The colours a prompt may name, as 0-255 RGB. Primaries are pure so that the tiny model's
#: targets are as far apart as the RGB cube allows.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
}

_COLOR_WORD = re.compile(r"\b(" + "|".join(COLORS) + r")\b", re.IGNORECASE)
# The longest distance in the unit RGB cube, black to white: it maps distances onto [0, 1].
_MAX_DISTANCE = math.sqrt(3.0)


def target_color(prompt: str, metadata: Mapping[str, Any]) -> np.ndarray:
    """The wanted colour as RGB in [0, 1].

    ``metadata["color"]`` (a name from ``COLORS`` or an ``[r, g, b]`` triple of 0-255) wins;
    otherwise the first colour word of the prompt. Raises ``ValueError`` when there is neither.
    """
    given = metadata.get("color")
    if isinstance(given, str):
        if given.lower() not in COLORS:
            raise ValueError(f"metadata colour '{given}' is unknown: use one of {list(COLORS)}")
        rgb: Sequence[float] = COLORS[given.lower()]
    elif given is not None:
        rgb = [float(c) for c in given]
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"metadata colour {given!r} must be three values in 0..255")
    else:
        match = _COLOR_WORD.search(prompt)
        if match is None:
            raise ValueError(f"prompt {prompt!r} names no colour: name one of {list(COLORS)}")
        rgb = COLORS[match.group(1).lower()]
    return np.asarray(rgb, dtype=np.float64) / 255.0


def _targets(prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.stack([target_color(p, m) for p, m in zip(prompts, metadata, strict=True)])


class ColorReward:
    """Score = 1 - |mean colour - target| / sqrt(3), in [0, 1], with RGB scaled to [0, 1].

    Components: ``mean_red``, ``mean_green``, ``mean_blue``, the image's mean colour in [0, 1].
    """

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        check_batch(images, prompts, metadata)
        mean = images.reshape(images.shape[0], -1, 3).mean(axis=1, dtype=np.float64) / 255.0
        distance = np.linalg.norm(mean - _targets(prompts, metadata), axis=1)
        return RewardOutput(
            1.0 - distance / _MAX_DISTANCE,
            {"mean_red": mean[:, 0], "mean_green": mean[:, 1], "mean_blue": mean[:, 2]},
        )


class PixelColorReward:
    """Score = the mean over pixels of 1 - |pixel - target| / sqrt(3), in [0, 1].

    Stricter than ``ColorReward``: half black, half white averages to grey but scores only about
    0.5 against grey here, as each pixel is half the cube's diagonal from it.
    """

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        check_batch(images, prompts, metadata)
        pixels = images.reshape(images.shape[0], -1, 3).astype(np.float64) / 255.0
        targets = _targets(prompts, metadata)[:, None, :]
        distance = np.linalg.norm(pixels - targets, axis=2)
        return RewardOutput((1.0 - distance / _MAX_DISTANCE).mean(axis=1))
