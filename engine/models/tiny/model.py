"""The built-in tiny model: an SD3 DiT in pixel space with the code-built text encoder.

Pixel space, no VAE: a VAE would need training of its own and would blur 32 x 32 images, while
the DiT's 4 x 4 patches already cut a 32 x 32 image into 64 tokens. The DiT is a genuine
``SD3Transformer2DModel`` (3 channels in and out), so the trainer fine-tunes the same module
class and the same velocity code as for SD3.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from engine.models.base import FlowModel, flow_sigmas, placement, to_uint8
from engine.models.conditioning import Conditioning
from engine.models.sd3 import sd3_velocity
from engine.models.tiny.text import TinyTextConfig, TinyTextEncoder, TinyTokenizer

#: The DiT's configuration; patch 4 x 4 in pixel space matches the tiny family's factor.
TRANSFORMER_CONFIG: dict[str, int] = {
    "sample_size": 32,
    "patch_size": 4,
    "in_channels": 3,
    "out_channels": 3,
    "num_layers": 2,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "caption_projection_dim": 64,
    "pooled_projection_dim": 32,
    # Position embeddings for up to 16 x 16 patches: images up to 64 x 64 pixels.
    "pos_embed_max_size": 16,
}


class TinyModel(FlowModel):
    """The CPU demo's model; ``family`` is ``tiny``, guidance is SD3-style CFG."""

    family = "tiny"

    def __init__(
        self,
        transformer: Any,
        text_encoder: TinyTextEncoder,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ) -> None:
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.tokenizer = TinyTokenizer(text_encoder.config)
        self.scheduler: Any = scheduler
        self.device, self.dtype = placement(transformer)

    @classmethod
    def random(cls, seed: int) -> TinyModel:
        """A freshly initialised model; the same seed gives the same weights."""
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
        text_encoder = TinyTextEncoder(TinyTextConfig())
        # Embeddings of unit variance per entry keep colour words far apart after pooling.
        torch.nn.init.normal_(text_encoder.token_embedding.weight)
        torch.nn.init.normal_(text_encoder.position_embedding.weight, std=0.1)
        return cls(transformer, text_encoder.requires_grad_(False), tiny_scheduler())

    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenizer(texts)
        embeds, pooled = self.text_encoder(ids.to(self.device), mask.to(self.device))
        return {"prompt_embeds": embeds.to(self.dtype), "pooled": pooled.to(self.dtype)}

    def _velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: Conditioning,
        *,
        guidance_scale: float,
        true_cfg_scale: float,
    ) -> torch.Tensor:
        return sd3_velocity(self.transformer, latents, sigma, conditioning, guidance_scale)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, height, width)

    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        return to_uint8(latents)

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        return flow_sigmas(self.scheduler, num_steps, None, linear_sigmas=False)


def tiny_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Unshifted flow-matching schedule: 32 x 32 pixels need no resolution shift."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
