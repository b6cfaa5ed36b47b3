"""Latents from a rollout server in the trainer's layout: its shape, dtype and device.

sglang 0.5.23 sends a trajectory as its pipeline keeps it: FLUX and Qwen-Image latents packed
into 2 x 2 patch tokens, [T + 1, (h/2)(w/2), 4C] (``pipeline_configs/base.py``'s
``pack_latents_2x2``), float32 on the CPU. The trainer's ``FlowModel`` takes spatial latents
[C, h, w] in its own dtype on its own device (``FlowModel.velocity`` packs them itself), so the
client unpacks and moves them here, at the boundary, and refuses any other shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.models.base import FlowModel
from engine.models.packing import unpack_2x2


class LatentShapeError(ValueError):
    """Latents whose shape fits neither the model's layout nor its packed form."""


@dataclass(frozen=True)
class LatentLayout:
    """How the trainer keeps one sample's latents."""

    #: One sample's spatial latent shape for an image of (height, width): ``latent_shape``.
    shape: Callable[[int, int], tuple[int, ...]]
    #: The dtype the trainer computes in.
    dtype: torch.dtype = torch.float32
    #: Where the trainer's tensors live.
    device: torch.device | str = "cpu"

    @classmethod
    def of(cls, model: FlowModel) -> LatentLayout:
        """The layout of ``model``'s latents."""
        return cls(model.latent_shape, model.dtype, model.device)

    def adopt(self, chain: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``chain`` [T + 1, ...] as [T + 1, C, h, w] in this layout's dtype, on its device.

        Spatial latents pass as they are; 2 x 2 packed tokens [T + 1, (h/2)(w/2), 4C] are
        unpacked. Raises ``LatentShapeError`` naming both accepted shapes for anything else.
        """
        spatial = tuple(self.shape(height, width))
        entries = chain.shape[0]
        if tuple(chain.shape[1:]) == spatial:
            unpacked = chain
        elif len(spatial) == 3 and tuple(chain.shape[1:]) == packed_shape(spatial):
            unpacked = unpack_2x2(chain, spatial[1], spatial[2])
        else:
            expected = [entries, *spatial]
            packed = [entries, *packed_shape(spatial)] if len(spatial) == 3 else None
            raise LatentShapeError(
                f"has shape {list(chain.shape)}: expected {expected}"
                + (f" or packed {packed}" if packed else "")
                + f" for a {height} x {width} image"
            )
        return unpacked.to(device=self.device, dtype=self.dtype)


def packed_shape(spatial: tuple[int, ...]) -> tuple[int, int]:
    """The 2 x 2 token shape (seq, 4C) of spatial latents (C, h, w); odd sides do not pack."""
    channels, height, width = spatial
    if height % 2 or width % 2:
        return (-1, -1)
    return ((height // 2) * (width // 2), channels * 4)
