"""The in-process diffusers backend: a microgroup's M samples in one batch per step.

Per request: the prompt (and its negative) is text-encoded once and the conditioning repeated
to M rows; each sample's noise comes from a generator seeded with its own seed; every step is
one batched DiT forward (guidance rows included); the final latents are decoded once.
"""

from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass

import torch

from engine.models.base import FlowModel
from engine.models.conditioning import Conditioning
from engine.rollout.steps import ode_step, stochastic_step, velocity_at
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample
from engine.sde import StepResult


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
        conditioning = encode_request(model, request)
        encoded = time.perf_counter()

        generators = seed_generators(model, request.seeds)
        first = window[0] if window else 0
        chain_steps = range(first, first + len(window) + 1) if window else range(0)
        run = denoise(model, request, conditioning, generators, record=chain_steps)
        latents, schedule = run.final, run.schedule
        denoised = time.perf_counter()

        images = model.decode(latents, height, width)
        decoded = time.perf_counter()

        steps = (
            torch.stack([run.steps[i].log_prob for i in window], dim=1)
            if window
            else torch.zeros(count, 0)
        )
        trajectory = (
            torch.stack([run.recorded[i] for i in chain_steps], dim=1)
            if window
            else latents[:, None][:, :0]
        )
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


def encode_request(model: FlowModel, request: RolloutRequest) -> Conditioning:
    """The prompt (and its negative, when guidance needs it) encoded once, repeated to M rows."""
    negative = (
        [request.negative_prompt]
        if model.needs_negative(request.guidance_scale, request.true_cfg_scale)
        else None
    )
    return model.encode_prompts([request.prompt], negative).repeat(request.num_outputs)


def seed_generators(model: FlowModel, seeds: tuple[int, ...]) -> list[torch.Generator]:
    """A generator per sample on the model's device, so that a seed draws the same noise
    whichever samples share its batch."""
    return [torch.Generator(model.device).manual_seed(seed) for seed in seeds]


@dataclass(frozen=True)
class Denoised:
    """One request's denoising loop: what ``denoise`` was asked to keep."""

    #: The latents after the last step, [M, ...].
    final: torch.Tensor
    #: Step index i -> the latents x_t before step i (i = N: the final latents), for the
    #: indices asked for.
    recorded: dict[int, torch.Tensor]
    #: Stochastic step index -> its ``StepResult`` (log-prob, mean, std).
    steps: dict[int, StepResult]
    #: The schedule, float32 [N + 1].
    schedule: torch.Tensor


def denoise(
    model: FlowModel,
    request: RolloutRequest,
    conditioning: Conditioning,
    generators: list[torch.Generator],
    *,
    record: Container[int],
) -> Denoised:
    """Run ``request``'s N steps from its seeds' noise: steps in ``sde_step_indices`` with its
    sampler, the rest as the ODE, keeping the latents before each step in ``record`` (N names
    the final latents), as sglang's ``rollout_return_step_indices`` does."""
    height, width, window = request.height, request.width, request.sde_step_indices
    schedule = model.sigmas(request.num_inference_steps, height, width)
    latents = model.initial_latents(generators, height, width)
    recorded: dict[int, torch.Tensor] = {}
    steps: dict[int, StepResult] = {}
    with torch.no_grad():
        for index in range(request.num_inference_steps):
            if index in record:
                recorded[index] = latents
            if index in window:
                step = stochastic_step(
                    model, latents, schedule, index, conditioning, request, generators=generators
                )
                latents, steps[index] = step.prev_sample, step
            else:
                velocity = velocity_at(model, latents, schedule, index, conditioning, request)
                latents = ode_step(velocity, latents, schedule, index)
    if request.num_inference_steps in record:
        recorded[request.num_inference_steps] = latents
    return Denoised(latents, recorded, steps, schedule)
