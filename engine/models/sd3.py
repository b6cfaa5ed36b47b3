"""SD3 / SD3.5: ``StableDiffusion3Pipeline`` components behind the ``FlowModel`` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.models.base import FlowModel, flow_sigmas, placement, to_uint8
from engine.models.conditioning import Conditioning


def sd3_velocity(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    conditioning: Conditioning,
    guidance_scale: float,
) -> torch.Tensor:
    """An ``SD3Transformer2DModel``'s guided velocity, float32 [B, C, h, w].

    With ``guidance_scale`` > 1 the unconditional rows run in the same forward as the
    conditional ones ([negative; positive], as diffusers batches them) and are combined in
    float32: the difference of two nearly equal predictions loses most of a bf16 mantissa.
    """
    dtype = latents.dtype
    # The DiT embeds the scheduler's timestep, which is sigma x 1000.
    timestep = sigma.to(device=latents.device, dtype=dtype) * 1000
    embeds, pooled = conditioning.positive["prompt_embeds"], conditioning.positive["pooled"]
    guided = guidance_scale > 1.0
    if guided:
        if conditioning.negative is None:
            raise ValueError("guidance_scale > 1 needs the negative prompt's conditioning")
        embeds = torch.cat([conditioning.negative["prompt_embeds"], embeds])
        pooled = torch.cat([conditioning.negative["pooled"], pooled])
        latents, timestep = torch.cat([latents, latents]), torch.cat([timestep, timestep])
    out = transformer(
        hidden_states=latents,
        timestep=timestep,
        encoder_hidden_states=embeds.to(dtype),
        pooled_projections=pooled.to(dtype),
        return_dict=False,
    )[0].float()
    if not guided:
        return out
    unconditional, conditional = out.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


class SD3Model(FlowModel):
    """SD3 and SD3.5 (MMDiT with CLIP-L, CLIP-G and optional T5 text encoders, 16-channel VAE)."""

    family = "sd3"

    def __init__(self, pipeline: Any, max_sequence_length: int = 256) -> None:
        """``pipeline``: a loaded ``StableDiffusion3Pipeline``; T5 prompts are cut at
        ``max_sequence_length`` tokens as the pipeline's default does."""
        self.pipeline = pipeline
        self.transformer = pipeline.transformer
        self.config: Any = pipeline.transformer.config
        self.device, self.dtype = placement(self.transformer)
        self.max_sequence_length = max_sequence_length

    def text_encoders(self) -> list[torch.nn.Module]:
        p = self.pipeline
        return [e for e in (p.text_encoder, p.text_encoder_2, p.text_encoder_3) if e is not None]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # Guidance off: the negatives are already among ``texts``, so each encoder runs once.
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=texts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
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
        scale = self.pipeline.vae_scale_factor
        return (int(self.config.in_channels), height // scale, width // scale)

    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        vae = self.pipeline.vae
        scaled = latents / vae.config.scaling_factor + vae.config.shift_factor
        with torch.no_grad():
            return to_uint8(vae.decode(scaled.to(vae.dtype), return_dict=False)[0])

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        patch = int(self.config.patch_size)
        _, h, w = self.latent_shape(height, width)
        return flow_sigmas(
            self.pipeline.scheduler, num_steps, (h // patch) * (w // patch), linear_sigmas=False
        )
