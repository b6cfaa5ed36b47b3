"""Synthetic training images for the tiny model: a coloured background with one shape on it.

The colour and the shape are drawn independently of the prompt, so the pre-trained model paints
every palette colour for every prompt and a group's samples differ: GRPO has something to
choose between. The shape is a darker or lighter shade of the background, so an image's mean
colour stays close to its background colour and the colour reward remains reachable.
"""

from __future__ import annotations

import torch

#: Background colours, RGB in [0, 1]: the tiny-color prompts' four and six distractors.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.0, 1.0),
    (1.0, 1.0, 1.0),
    (0.0, 0.0, 0.0),
    (1.0, 0.65, 0.0),
    (0.5, 0.0, 0.5),
)

#: Prompts drawn at random for each image, whatever its colour.
PROMPTS: tuple[str, ...] = (
    "a red image",
    "a green image",
    "a blue image",
    "a yellow image",
    "a cyan image",
    "a magenta image",
    "a white image",
    "a black image",
    "an orange picture",
    "a purple picture",
    "a circle",
    "a square",
    "an image",
)


def synthetic_batch(
    count: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[str]]:
    """``count`` images in [-1, 1], float32 [count, 3, size, size], and a prompt for each.

    Each image: a palette background and a disk or a square (half each) of 20 to 45 % of the
    side, centred anywhere it fits, shaded halfway towards black (bright colours) or white.
    """
    palette = torch.tensor(PALETTE)
    colours = palette[torch.randint(len(PALETTE), (count,), generator=generator)]
    shade = torch.where(colours.sum(dim=1, keepdim=True) > 1.0, colours * 0.5, colours * 0.5 + 0.5)
    radius = (0.1 + 0.125 * torch.rand(count, generator=generator)) * size
    centre = radius[:, None] + torch.rand(count, 2, generator=generator) * (
        size - 2 * radius[:, None]
    )
    disk = torch.rand(count, generator=generator) < 0.5
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dy = coords[None, :, None] - centre[:, 0, None, None]
    dx = coords[None, None, :] - centre[:, 1, None, None]
    r = radius[:, None, None]
    inside = torch.where(
        disk[:, None, None],
        dy**2 + dx**2 <= r**2,
        (dy.abs() <= r) & (dx.abs() <= r),
    )
    images = torch.where(inside[:, None], shade[:, :, None, None], colours[:, :, None, None])
    picks = torch.randint(len(PROMPTS), (count,), generator=generator)
    return images * 2 - 1, [PROMPTS[int(i)] for i in picks]
