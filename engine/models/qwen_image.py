"""Qwen-Image: ``QwenImagePipeline`` components behind the ``FlowModel`` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.models.base import FlowModel, flow_sigmas, placement, to_uint8
from engine.models.conditioning import Conditioning
from engine.models.packing import pack_2x2, unpack_2x2


class QwenImageModel(FlowModel):
    """Qwen-Image (Qwen2.5-VL text encoder, 2 x 2 packed latents, true CFG).

    True CFG runs the negative prompt as extra rows of the same DiT forward rather than a
    second forward: one batched call per step, as the rollout contract asks.
    """

    family = "qwen-image"

    def __init__(self, pipeline: Any) -> None:
        """``pipeline``: a loaded ``QwenImagePipeline``."""
        self.pipeline = pipeline
        self.transformer = pipeline.transformer
        self.config: Any = pipeline.transformer.config
        self.device, self.dtype = placement(self.transformer)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.pipeline.text_encoder]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # One call pads prompt and negative to a common length, which lets them share a batch.
        embeds, mask = self.pipeline.encode_prompt(prompt=texts, device=self.device)
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"prompt_embeds": embeds.to(self.dtype), "mask": mask}

    def _velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: Conditioning,
        *,
        guidance_scale: float,
        true_cfg_scale: float,
    ) -> torch.Tensor:
        batch, _, height, width = latents.shape
        dtype, device = latents.dtype, latents.device
        embeds, mask = conditioning.positive["prompt_embeds"], conditioning.positive["mask"]
        timestep = sigma.to(device=device, dtype=dtype)
        tokens = pack_2x2(latents)
        guided = true_cfg_scale > 1.0
        if guided:
            if conditioning.negative is None:
                raise ValueError("true_cfg_scale > 1 needs the negative prompt's conditioning")
            embeds = torch.cat([embeds, conditioning.negative["prompt_embeds"]])
            mask = torch.cat([mask, conditioning.negative["mask"]])
            tokens, timestep = torch.cat([tokens, tokens]), torch.cat([timestep, timestep])
        out = self.transformer(
            hidden_states=tokens,
            # Qwen-Image's DiT takes the time in [0, 1] and scales it by 1000 itself.
            timestep=timestep,
            encoder_hidden_states=embeds.to(dtype),
            encoder_hidden_states_mask=mask,
            img_shapes=[[(1, height // 2, width // 2)]] * tokens.shape[0],
            return_dict=False,
        )[0].float()
        if guided:
            out = _true_cfg(out[:batch], out[batch:], true_cfg_scale)
        return unpack_2x2(out, height, width)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        side = self.pipeline.vae_scale_factor * 2
        channels = int(self.config.in_channels) // 4
        return (channels, 2 * (height // side), 2 * (width // side))

    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        vae = self.pipeline.vae
        channels = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, channels, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, channels, 1, 1, 1)
        # The video VAE takes [B, C, frames, h, w]; an image is one frame.
        frames = latents.unsqueeze(2).float() * std.to(latents.device) + mean.to(latents.device)
        with torch.no_grad():
            decoded = vae.decode(frames.to(vae.dtype), return_dict=False)[0]
        return to_uint8(decoded[:, :, 0])

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        _, h, w = self.latent_shape(height, width)
        return flow_sigmas(
            self.pipeline.scheduler, num_steps, (h // 2) * (w // 2), linear_sigmas=True
        )


def _true_cfg(positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """Qwen-Image's true CFG: the guided prediction rescaled per token to the conditional norm."""
    combined = negative + scale * (positive - negative)
    ratio = positive.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True)
    return combined * ratio
