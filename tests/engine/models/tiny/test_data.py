from __future__ import annotations

import torch

from engine.models.tiny.data import PALETTE, PROMPTS, synthetic_batch


def test_batch_is_palette_images_with_a_shape_and_random_prompts():
    images, prompts = synthetic_batch(32, 32, torch.Generator().manual_seed(0))
    assert images.shape == (32, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert set(prompts) <= set(PROMPTS)
    palette = torch.tensor(PALETTE) * 2 - 1
    corners = images[:, :, 0, 0]
    # The shape never covers the whole image, so most corners show the background colour.
    on_palette = (corners[:, None] - palette[None]).abs().sum(-1).min(dim=1).values < 1e-6
    assert on_palette.float().mean() > 0.5
    assert len({tuple(c.tolist()) for c in corners}) > 4
