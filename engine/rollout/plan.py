"""A rollout cut into requests: each prompt group split into microgroups of M samples.

Seeds and the SDE window come from ``engine.layout`` (DESIGN.md section 1), so the requests of
a rollout carry the same seeds and window whatever ``diffusion_microgroup_size`` is.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.layout import SEED_MODULUS, layout, sample_seed
from engine.recipe import Recipe
from engine.rollout.types import RolloutRequest, RolloutResult


def rollout_requests(
    recipe: Recipe, prompts: Sequence[str], rollout_index: int
) -> list[RolloutRequest]:
    """The requests of rollout ``rollout_index``: group g is ``prompts[g]``, cut into G / M
    requests of M consecutive sample seeds, all sharing the rollout's SDE window.

    Raises ``ValueError`` unless there is one prompt per group (``rollout_batch_size``).
    """
    plan = layout(recipe, rollout_index)
    if len(prompts) != recipe.layout.rollout_batch_size:
        raise ValueError(
            f"{len(prompts)} prompts for rollout_batch_size={recipe.layout.rollout_batch_size}: "
            "draw one prompt per group"
        )
    sampler = recipe.sampler
    return [
        RolloutRequest(
            prompt=prompt,
            seeds=chunk,
            height=sampler.height,
            width=sampler.width,
            num_inference_steps=sampler.num_inference_steps,
            sde_step_indices=plan.sde_window,
            sde_type=sampler.sde_type,
            noise_level=sampler.noise_level,
            guidance_scale=sampler.guidance_scale,
            true_cfg_scale=sampler.true_cfg_scale,
            group_index=group,
        )
        for group, prompt in enumerate(prompts)
        for chunk in _chunks(plan.group_seeds(group), recipe.layout.diffusion_microgroup_size)
    ]


def evaluation_requests(
    recipe: Recipe, prompts: Sequence[str], samples_per_prompt: int = 1
) -> list[RolloutRequest]:
    """Evaluation as an ODE (no stochastic step) with ``eval_num_inference_steps``.

    The seeds depend only on the run's seed, the prompt's position and the sample, so every
    evaluation of a run draws the same noise and its curve measures the model alone. They are
    offset by half the seed range to stay clear of the first rollouts' seeds.
    """
    sampler = recipe.sampler
    base = (recipe.run.seed + SEED_MODULUS // 2) % SEED_MODULUS
    micro = min(recipe.layout.diffusion_microgroup_size, samples_per_prompt)
    return [
        RolloutRequest(
            prompt=prompt,
            seeds=chunk,
            height=sampler.height,
            width=sampler.width,
            num_inference_steps=sampler.eval_num_inference_steps,
            noise_level=0.0,
            guidance_scale=sampler.guidance_scale,
            true_cfg_scale=sampler.true_cfg_scale,
            group_index=group,
        )
        for group, prompt in enumerate(prompts)
        for chunk in _chunks(
            tuple(
                sample_seed(base, group, i, samples_per_prompt) for i in range(samples_per_prompt)
            ),
            micro,
        )
    ]


def _chunks(seeds: tuple[int, ...], size: int) -> list[tuple[int, ...]]:
    return [seeds[start : start + size] for start in range(0, len(seeds), size)]


def request_order(
    requests: Sequence[RolloutRequest], arrived: Sequence[RolloutResult]
) -> list[int]:
    """Indices into ``arrived`` (each result holding its request from ``requests``) that put it
    in the requests' order (group, then sample), whatever order the results arrived in."""
    position = {id(request): index for index, request in enumerate(requests)}
    return sorted(range(len(arrived)), key=lambda i: position[id(arrived[i].request)])
