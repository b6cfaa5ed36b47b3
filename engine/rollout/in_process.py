"""The in-process diffusers backend: a microgroup's M samples in one batch per step.

Per request: the prompt (and its negative) is text-encoded once and the conditioning repeated
to M rows; each sample's noise comes from a generator seeded with its own seed; every step is
one batched DiT forward (guidance rows included); the final latents are decoded once.
"""

from __future__ import annotations

import time

import torch

from engine.models.base import FlowModel
from engine.rollout.steps import ode_step, stochastic_step, velocity_at
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample


class InProcessBackend:
    """Generates with a ``FlowModel`` in this process, on its device."""

    def __init__(self, model: FlowModel) -> None:
        self.model = model

    def generate(self, request: RolloutRequest) -> RolloutResult:
        """Answer ``request``; steps in ``sde_step_indices`` use its sampler, the rest the ODE."""
        model, count = self.model, request.num_outputs
        height, width = request.height, request.width
        window = request.sde_step_indices

        started = time.perf_counter()
        negative = (
            [request.negative_prompt]
            if model.needs_negative(request.guidance_scale, request.true_cfg_scale)
            else None
        )
        conditioning = model.encode_prompts([request.prompt], negative).repeat(count)
        encoded = time.perf_counter()

        # A generator per sample, on the model's device, so a seed draws the same noise
        # whichever samples share its batch.
        generators = [torch.Generator(model.device).manual_seed(seed) for seed in request.seeds]
        schedule = model.sigmas(request.num_inference_steps, height, width)
        latents = model.initial_latents(generators, height, width)
        chain: list[torch.Tensor] = []
        log_probs: list[torch.Tensor] = []
        with torch.no_grad():
            for index in range(request.num_inference_steps):
                if index in window:
                    if index == window[0]:
                        chain.append(latents)
                    step = stochastic_step(
                        model,
                        latents,
                        schedule,
                        index,
                        conditioning,
                        request,
                        generators=generators,
                    )
                    latents = step.prev_sample
                    chain.append(latents)
                    log_probs.append(step.log_prob)
                else:
                    velocity = velocity_at(model, latents, schedule, index, conditioning, request)
                    latents = ode_step(velocity, latents, schedule, index)
        denoised = time.perf_counter()

        images = model.decode(latents, height, width)
        decoded = time.perf_counter()

        steps = torch.stack(log_probs, dim=1) if log_probs else torch.zeros(count, 0)
        trajectory = torch.stack(chain, dim=1) if chain else latents[:, None][:, :0]
        first = window[0] if window else 0
        window_sigmas = schedule[first : first + len(window) + 1] if window else schedule[:0]
        samples = tuple(
            RolloutSample(
                seed=seed,
                image=images[row],
                log_probs=steps[row].float().cpu(),
                latents=trajectory[row],
                sigmas=window_sigmas,
            )
            for row, seed in enumerate(request.seeds)
        )
        return RolloutResult(
            request=request,
            samples=samples,
            schedule=schedule,
            timings=PhaseTimings(
                encode=encoded - started, denoise=denoised - encoded, decode=decoded - denoised
            ),
            dit_forwards=request.num_inference_steps,
        )
