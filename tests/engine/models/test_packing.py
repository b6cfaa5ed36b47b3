from __future__ import annotations

import torch
from diffusers import FluxPipeline

from engine.models.packing import pack_2x2, unpack_2x2


def test_pack_matches_the_pipelines_layout_and_unpacks():
    latents = torch.randn(2, 4, 6, 8)
    packed = pack_2x2(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 4, 6, 8))
    assert torch.equal(unpack_2x2(packed, 6, 8), latents)
