"""One denoising step of a request, shared by the rollout and the trainer's replay.

The trainer recomputes a stochastic step's log-prob with ``stochastic_step(...,
prev_sample=latents[k + 1])`` on the stored chain: the same function, the same DiT call on the
same batch, hence the same numbers (DESIGN.md: old log-probs are recomputed by the trainer).
"""

from __future__ import annotations

import torch

from engine.models.base import FlowModel
from engine.models.conditioning import Conditioning
from engine.rollout.types import RolloutRequest
from engine.sde import Generators, StepResult, sde_step


def velocity_at(
    model: FlowModel,
    latents: torch.Tensor,
    schedule: torch.Tensor,
    index: int,
    conditioning: Conditioning,
    request: RolloutRequest,
) -> torch.Tensor:
    """The guided velocity at step ``index`` for every row of ``latents``, float32."""
    sigma = schedule[index].expand(latents.shape[0])
    return model.velocity(
        latents,
        sigma,
        conditioning,
        guidance_scale=request.guidance_scale,
        true_cfg_scale=request.true_cfg_scale,
    )


def stochastic_step(
    model: FlowModel,
    latents: torch.Tensor,
    schedule: torch.Tensor,
    index: int,
    conditioning: Conditioning,
    request: RolloutRequest,
    *,
    generators: Generators = None,
    prev_sample: torch.Tensor | None = None,
) -> StepResult:
    """Step ``index`` with the request's sampler: draws from ``generators`` (one per row), or
    evaluates the log-prob of ``prev_sample`` when it is given."""
    velocity = velocity_at(model, latents, schedule, index, conditioning, request)
    return sde_step(
        request.sde_type,
        velocity,
        latents,
        schedule,
        index,
        noise_level=request.noise_level,
        prev_sample=prev_sample,
        generator=generators,
    )


def ode_step(
    velocity: torch.Tensor, latents: torch.Tensor, schedule: torch.Tensor, index: int
) -> torch.Tensor:
    """The Euler step x + v (t_next - t), diffusers' scheduler step, in the latents' dtype.

    Summed in float32 so that bf16 latents round once, not at every intermediate.
    """
    dt = (schedule[index + 1] - schedule[index]).to(torch.float32)
    return (latents.float() + dt * velocity.float()).to(latents.dtype)
