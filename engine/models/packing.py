"""FLUX's and Qwen-Image's token layout: 2 x 2 latent patches flattened into a sequence."""

from __future__ import annotations

import torch


def pack_2x2(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C], patches in row-major order, channel-major within."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(
        batch, (height // 2) * (width // 2), channels * 4
    )


def unpack_2x2(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pack_2x2`` for latents of ``height`` x ``width``."""
    batch, _, features = tokens.shape
    patches = tokens.view(batch, height // 2, width // 2, features // 4, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, features // 4, height, width)
