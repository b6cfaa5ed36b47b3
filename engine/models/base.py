"""The model interface the rollout and the trainer share: a flow-matching DiT with its encoders.

One ``FlowModel`` per family wraps the diffusers components. Every method is a function of its
inputs: the rollout and the trainer's replay call the same ``velocity`` on the same tensors and
get the same numbers (DESIGN.md: the trainer recomputes the old log-probs itself).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from engine.models.conditioning import Conditioning
from engine.models.families import FAMILIES


class FlowModel(ABC):
    """A flow-matching text-to-image model: v = noise - x0 on x_t = (1 - t) x0 + t noise.

    Latents are batch-first and spatial, [B, C, h, w], even for families whose DiT takes packed
    2 x 2 patches (FLUX, Qwen-Image): ``velocity`` packs them, so the shape always tells the
    image size. The rollout stores them as they are and the trainer hands them back unchanged.
    """

    #: The family name of ``engine.models.families.FAMILIES``.
    family: str
    #: The DiT: the module a trainer fine-tunes or gives LoRA adapters.
    transformer: torch.nn.Module
    #: Where the tensors live.
    device: torch.device
    #: The dtype the model was loaded in (``model.dtype``): frozen weights are stored in it,
    #: the DiT computes in it, latents and conditioning use it. Trainable weights may be
    #: float32 master copies beside it (``engine.policy``).
    dtype: torch.dtype

    def needs_negative(self, guidance_scale: float, true_cfg_scale: float) -> bool:
        """Whether guidance at these scales needs the negative prompt's conditioning."""
        kind = FAMILIES[self.family].guidance
        return (kind == "cfg" and guidance_scale > 1.0) or (
            kind == "true-cfg" and true_cfg_scale > 1.0
        )

    def encode_prompts(
        self, prompts: Sequence[str], negative_prompts: Sequence[str] | None = None
    ) -> Conditioning:
        """Encode prompts (and their negatives) in one text-encoder call: one row per prompt."""
        count = len(prompts)
        if negative_prompts is not None and len(negative_prompts) != count:
            raise ValueError(f"{len(negative_prompts)} negative prompts for {count} prompts")
        # Encoders parked off the device (``offload_text_encoders``) come back for the call.
        self._text_encoders_to(self.device)
        with torch.no_grad():
            encoded = self._encode(list(prompts) + list(negative_prompts or []))
        positive = {key: value[:count] for key, value in encoded.items()}
        if negative_prompts is None:
            return Conditioning(positive)
        return Conditioning(positive, {key: value[count:] for key, value in encoded.items()})

    def offload_text_encoders(self, device: str | torch.device = "cpu") -> None:
        """Park the text encoders on ``device`` (host memory) until the next ``encode_prompts``,
        which brings them back: their memory is free for training in between."""
        self._text_encoders_to(torch.device(device))

    def _text_encoders_to(self, device: torch.device) -> None:
        # Only encoders elsewhere move: the compatible server encodes on several threads at
        # once, and a module already in place must not be touched under a running forward.
        for encoder in self.text_encoders():
            if placement(encoder)[0] != device:
                encoder.to(device)

    @abstractmethod
    def text_encoders(self) -> list[torch.nn.Module]:
        """The family's text encoders: what ``offload_text_encoders`` moves."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The family's text encoders on ``texts`` in one batch: tensors with a row per text."""

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: Conditioning,
        *,
        guidance_scale: float = 1.0,
        true_cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """The guided velocity, float32 in the shape of ``latents`` [B, ...].

        ``sigma`` [B] is each row's time t in [0, 1]; ``conditioning`` has B rows. Guidance that
        needs the negative prompt runs it in the same batched DiT forward (2B rows), so the
        result depends only on these inputs and on the batch they form. The forward computes
        in ``dtype`` (``compute_precision``), whatever dtype the trainable weights are kept in.
        """
        with self.compute_precision():
            return self._velocity(
                latents,
                sigma,
                conditioning,
                guidance_scale=guidance_scale,
                true_cfg_scale=true_cfg_scale,
            )

    def compute_precision(self) -> AbstractContextManager[Any]:
        """Where the DiT runs: autocast to ``dtype`` when that is below float32.

        Frozen weights are stored in ``dtype`` already; trainable ones are float32 master copies
        (``engine.policy``), which autocast casts to ``dtype`` for each matmul while the
        gradient reaches them in float32. The rollout, the trainer's replay and the KL's
        reference forward all come through here, so they compute alike. A float32 model runs
        as it always did, without autocast.
        """
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @abstractmethod
    def _velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: Conditioning,
        *,
        guidance_scale: float,
        true_cfg_scale: float,
    ) -> torch.Tensor:
        """``velocity``'s family-specific forward, called inside ``compute_precision``."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """One sample's latent shape for an image of ``height`` x ``width`` pixels."""

    def initial_latents(
        self, generators: Sequence[torch.Generator], height: int, width: int
    ) -> torch.Tensor:
        """Pure noise [B, ...], sample b drawn from ``generators[b]`` alone (DESIGN.md seeds).

        Drawn in float32 before the cast, so that the noise of a seed is the same in any dtype.
        """
        shape = self.latent_shape(height, width)
        noise = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators])
        return noise.to(device=self.device, dtype=self.dtype)

    @abstractmethod
    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Final latents [B, ...] to images, uint8 [B, height, width, 3]."""

    @abstractmethod
    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        """The scheduler's schedule for ``num_steps`` steps: float32 [N + 1], from ~1 down to 0."""


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a module's first parameter."""
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], [B, 3, H, W] -> uint8 [B, H, W, 3], rounded as diffusers' processor."""
    scaled = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def flow_sigmas(
    scheduler: Any, num_steps: int, image_seq_len: int | None, *, linear_sigmas: bool
) -> torch.Tensor:
    """Run ``scheduler.set_timesteps`` as the family's pipeline does and return its sigmas.

    ``scheduler`` is a ``FlowMatchEulerDiscreteScheduler``; a fresh copy is configured so that
    the model's own scheduler is never mutated. ``image_seq_len`` feeds the resolution-dependent
    shift (mu) when the scheduler uses dynamic shifting; ``linear_sigmas`` passes
    linspace(1, 1/N, N) as FLUX and Qwen-Image do, instead of letting the scheduler space them.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    config = fresh.config
    kwargs: dict[str, Any] = {}
    if config.get("use_dynamic_shifting", False):
        if image_seq_len is None:
            raise ValueError("a dynamically shifted schedule needs the image's sequence length")
        kwargs["mu"] = _shift(image_seq_len, config)
    if linear_sigmas:
        kwargs["sigmas"] = np.linspace(1.0, 1.0 / num_steps, num_steps).tolist()
        fresh.set_timesteps(**kwargs)
    else:
        fresh.set_timesteps(num_steps, **kwargs)
    return fresh.sigmas.detach().to(torch.float32).cpu()


def _shift(image_seq_len: int, config: Any) -> float:
    """The pipelines' mu: linear in the sequence length between the base and max shifts."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return float(image_seq_len * slope + base_shift - slope * base_len)
