"""FLUX.1: ``FluxPipeline`` components behind the ``FlowModel`` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.models.base import FlowModel, flow_sigmas, placement, to_uint8
from engine.models.conditioning import Conditioning
from engine.models.packing import pack_2x2, unpack_2x2


class FluxModel(FlowModel):
    """FLUX.1 (CLIP-L pooled + T5 sequence conditioning, 2 x 2 packed latents).

    Guidance is embedded: ``guidance_scale`` is an input of a guidance-distilled DiT (dev) and
    costs no extra forward; schnell-style DiTs without a guidance embedding ignore it.
    """

    family = "flux"

    def __init__(self, pipeline: Any, max_sequence_length: int = 512) -> None:
        """``pipeline``: a loaded ``FluxPipeline``; T5 prompts are padded or cut to
        ``max_sequence_length`` tokens as the pipeline does."""
        self.pipeline = pipeline
        self.transformer = pipeline.transformer
        self.config: Any = pipeline.transformer.config
        self.device, self.dtype = placement(self.transformer)
        self.max_sequence_length = max_sequence_length

    def text_encoders(self) -> list[torch.nn.Module]:
        p = self.pipeline
        return [e for e in (p.text_encoder, p.text_encoder_2) if e is not None]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=texts,
            prompt_2=None,
            device=self.device,
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
        batch, _, height, width = latents.shape
        dtype, device = latents.dtype, latents.device
        embeds = conditioning.positive["prompt_embeds"].to(dtype)
        guidance = None
        if self.config.guidance_embeds:
            guidance = torch.full((batch,), guidance_scale, device=device, dtype=torch.float32)
        out = self.transformer(
            hidden_states=pack_2x2(latents),
            # FLUX's DiT takes the time in [0, 1] and scales it by 1000 itself.
            timestep=sigma.to(device=device, dtype=dtype),
            guidance=guidance,
            pooled_projections=conditioning.positive["pooled"].to(dtype),
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=_image_ids(height // 2, width // 2, device, dtype),
            return_dict=False,
        )[0]
        return unpack_2x2(out.float(), height, width)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        # The VAE halves the image vae_scale_factor times; packing needs even latent sides.
        side = self.pipeline.vae_scale_factor * 2
        channels = int(self.config.in_channels) // 4
        return (channels, 2 * (height // side), 2 * (width // side))

    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        vae = self.pipeline.vae
        scaled = latents / vae.config.scaling_factor + vae.config.shift_factor
        with torch.no_grad():
            return to_uint8(vae.decode(scaled.to(vae.dtype), return_dict=False)[0])

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        _, h, w = self.latent_shape(height, width)
        return flow_sigmas(
            self.pipeline.scheduler, num_steps, (h // 2) * (w // 2), linear_sigmas=True
        )


def _image_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's RoPE positions of the packed tokens: (0, row, column) per token, [rows x cols, 3]."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)
