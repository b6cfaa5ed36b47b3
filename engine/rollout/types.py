"""The rollout contract (DESIGN.md section 3): one prompt, M outputs; per sample an image,
the log-probs, trajectory latents and sigmas of the stochastic steps; timings per phase.

It mirrors SGLang-D's ``POST /rollout/generate`` (M is its ``num_outputs_per_prompt``), so the
in-process backend and an HTTP client answer the same request with the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RolloutRequest:
    """One prompt and the seeds of its M samples, generated together."""

    #: The text to generate from.
    prompt: str
    #: One seed per output (len = M); sample i's noise comes from seeds[i] alone.
    seeds: tuple[int, ...]
    #: Image height in pixels.
    height: int
    #: Image width in pixels.
    width: int
    #: Denoising steps N.
    num_inference_steps: int
    #: The consecutive stochastic steps (indices in 0..N-1); empty samples a pure ODE.
    sde_step_indices: tuple[int, ...] = ()
    #: ``sde`` (Flow-GRPO) or ``cps``.
    sde_type: str = "sde"
    #: The sampler's noise level a on the stochastic steps.
    noise_level: float = 0.7
    #: SD3-style classifier-free guidance or FLUX's embedded guidance; 1.0 is none.
    guidance_scale: float = 1.0
    #: Qwen-Image's true CFG; 1.0 is none.
    true_cfg_scale: float = 1.0
    #: The guidance's negative prompt (an empty string is the unconditional prompt).
    negative_prompt: str = ""
    #: The prompt group this request belongs to (echoed back; the rollout's g).
    group_index: int = 0

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds is empty: give one seed per output")
        if any(seed < 0 for seed in self.seeds):
            # sglang refuses them (SamplingParams._validate); sample seeds are mod 2^31.
            raise ValueError(f"seeds={list(self.seeds)} must be >= 0")
        window = self.sde_step_indices
        if window and window != tuple(range(window[0], window[0] + len(window))):
            raise ValueError(f"sde_step_indices={window} must be consecutive steps")
        if window and not (window[0] >= 0 and window[-1] < self.num_inference_steps):
            raise ValueError(
                f"sde_step_indices={window} must lie in 0..{self.num_inference_steps - 1}"
            )

    @property
    def num_outputs(self) -> int:
        """M, SGLang-D's ``num_outputs_per_prompt``."""
        return len(self.seeds)


@dataclass(frozen=True)
class RolloutSample:
    """One generated sample and what the trainer needs to replay its stochastic steps."""

    #: The seed its noise came from.
    seed: int
    #: The decoded image, uint8 [H, W, 3].
    image: np.ndarray
    #: log-prob of each stochastic step's outcome, float32 [T] (T = len(sde_step_indices)).
    log_probs: torch.Tensor
    #: The chain from the window's start to the sample after its last step: [T + 1, C, h, w]
    #: in the model's dtype; latents[k] -> latents[k + 1] is step sde_step_indices[k].
    latents: torch.Tensor
    #: The time t of each of those latents, float32 [T + 1] (schedule[start .. end + 1]).
    sigmas: torch.Tensor


@dataclass(frozen=True)
class PhaseTimings:
    """Wall-clock seconds per phase of one request."""

    #: Text encoding (once per request).
    encode: float
    #: The denoising loop: every DiT forward and SDE step.
    denoise: float
    #: Decoding the final latents to images.
    decode: float

    @property
    def total(self) -> float:
        return self.encode + self.denoise + self.decode


@dataclass(frozen=True)
class RolloutResult:
    """The answer to one ``RolloutRequest``: its M samples in the order of its seeds."""

    #: The request answered.
    request: RolloutRequest
    #: One per seed, in order.
    samples: tuple[RolloutSample, ...]
    #: The whole schedule, float32 [N + 1]: ``sde_step`` takes it with the global step index.
    #: Empty when a server answered images only (an evaluation request: no window).
    schedule: torch.Tensor
    #: Seconds per phase.
    timings: PhaseTimings
    #: DiT forward calls made (true CFG's negative rows ride in the same call).
    dit_forwards: int

    @property
    def images(self) -> np.ndarray:
        """All images, uint8 [M, H, W, 3]."""
        return np.stack([sample.image for sample in self.samples])

    @property
    def log_probs(self) -> torch.Tensor:
        """float32 [M, T]."""
        return torch.stack([sample.log_probs for sample in self.samples])

    @property
    def latents(self) -> torch.Tensor:
        """The trajectories batched, [M, T + 1, C, h, w]."""
        return torch.stack([sample.latents for sample in self.samples])
