"""The sampler's rules: steps, guidance, the SDE's noise and the window of stochastic steps."""

from __future__ import annotations

import math

from engine.models.families import FAMILIES
from engine.problems import Problem, or_list
from engine.recipe import Recipe
from engine.validation.batching import at_least_one

#: Above this Flow-GRPO noise level the first step's mean coefficient on x, 1 - a^2 / 2 at t = 1,
#: turns negative and the step flips the sign of the latent.
SDE_NOISE_LEVEL_MAX = math.sqrt(2.0)
SDE_TYPES = ("sde", "cps")


def check_sampler(recipe: Recipe, problems: list[Problem], within_bounds: bool) -> None:
    sampler = recipe.sampler
    family = FAMILIES.get(recipe.model.family)
    for name, side in (("height", sampler.height), ("width", sampler.width)):
        if side < 1:
            problems.append(Problem(f"sampler.{name}", f"{name}={side} must be positive: e.g. 512"))
        elif family is not None and side % family.resolution_factor:
            factor = family.resolution_factor
            below, above = side // factor * factor, (side // factor + 1) * factor
            fix = or_list([v for v in (below, above) if v > 0])
            problems.append(
                Problem(
                    f"sampler.{name}",
                    f"{name}={side} is not a multiple of {factor} ({family.name}: VAE "
                    f"{family.vae_scale} x patch {family.patch_size}): use {fix}",
                )
            )
    n_steps = sampler.num_inference_steps
    if n_steps < 2:
        problems.append(
            Problem(
                "sampler.num_inference_steps",
                f"num_inference_steps={n_steps} must be at least 2: the last step is never "
                "trained, so fewer leave nothing to train; e.g. 10",
            )
        )
    at_least_one(
        problems, "sampler", "eval_num_inference_steps", sampler.eval_num_inference_steps, "e.g. 40"
    )
    check_guidance(recipe, problems)
    check_noise(recipe, problems)
    if within_bounds:
        check_window(recipe, problems)


def check_guidance(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    family = FAMILIES.get(recipe.model.family)
    for name, scale in (
        ("guidance_scale", sampler.guidance_scale),
        ("true_cfg_scale", sampler.true_cfg_scale),
    ):
        if not (math.isfinite(scale) and scale >= 1.0):
            problems.append(
                Problem(
                    f"sampler.{name}",
                    f"{name}={scale} must be at least 1.0: 1.0 turns guidance off",
                )
            )
    if family is None:
        return
    if family.guidance != "true-cfg" and sampler.true_cfg_scale != 1.0:
        problems.append(
            Problem(
                "sampler.true_cfg_scale",
                f"true_cfg_scale={sampler.true_cfg_scale} applies to qwen-image only: set it to "
                f"1.0 and use guidance_scale for {family.name}",
            )
        )
    if family.guidance == "true-cfg" and sampler.guidance_scale != 1.0:
        problems.append(
            Problem(
                "sampler.guidance_scale",
                f"guidance_scale={sampler.guidance_scale} has no effect on qwen-image: set it to "
                "1.0 and use true_cfg_scale for guidance",
            )
        )


def check_noise(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    level = sampler.noise_level
    if sampler.sde_type == "sde":
        if not (math.isfinite(level) and 0 < level < SDE_NOISE_LEVEL_MAX):
            problems.append(
                Problem(
                    "sampler.noise_level",
                    f"noise_level={level} is outside (0, 1.41) for sde_type='sde': 0 samples "
                    "nothing to train on and from sqrt(2) up the first step flips the latent's "
                    "sign; Flow-GRPO uses 0.7 (SD3.5) and 1.2 (Qwen-Image)",
                )
            )
    elif sampler.sde_type == "cps":
        if not (math.isfinite(level) and 0 < level <= 1):
            problems.append(
                Problem(
                    "sampler.noise_level",
                    f"noise_level={level} is outside (0, 1] for sde_type='cps': the step's std "
                    "is t_next x sin(noise_level x pi / 2); e.g. 0.8",
                )
            )
    else:
        problems.append(
            Problem(
                "sampler.sde_type",
                f"sde_type='{sampler.sde_type}' is unknown: use {or_list(SDE_TYPES)}",
            )
        )


def check_window(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    size, (first, last) = sampler.sde_window_size, sampler.sde_window_range
    n_steps = sampler.num_inference_steps
    if size < 1:
        problems.append(
            Problem(
                "sampler.sde_window_size",
                f"sde_window_size={size} trains no step: use at least 1",
            )
        )
        return
    if first < 0 or first > last:
        problems.append(
            Problem(
                "sampler.sde_window_range",
                f"sde_window_range=({first}, {last}) must satisfy 0 <= first <= last: "
                f"use e.g. ({max(0, min(first, last))}, {max(0, first, last)})",
            )
        )
        return
    if n_steps < 2:
        return
    latest_start = n_steps - 1 - size
    if latest_start < 0:
        problems.append(
            Problem(
                "sampler.sde_window_size",
                f"sde_window_size={size} does not fit before the last of num_inference_steps="
                f"{n_steps} steps, which is never stochastic: use at most {n_steps - 1}",
            )
        )
    elif last > latest_start:
        problems.append(
            Problem(
                "sampler.sde_window_range",
                f"sde_window_range=({first}, {last}) with sde_window_size={size} reaches step "
                f"{last + size - 1}, but the last step, {n_steps - 1} of num_inference_steps="
                f"{n_steps}, is never stochastic (its tiny sigma overflows the Gaussian "
                f"likelihood): keep the range within (0, {latest_start})",
            )
        )
