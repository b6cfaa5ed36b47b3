"""The layout's rules: how G, M, P, the GPUs and the batch sizes must divide one another
(DESIGN.md section 1)."""

from __future__ import annotations

from engine.problems import Problem, or_list
from engine.recipe import Recipe
from engine.validation.arithmetic import divisors, near


def at_least_one(problems: list[Problem], section: str, name: str, value: int, hint: str) -> bool:
    if value >= 1:
        return True
    problems.append(Problem(f"{section}.{name}", f"{name}={value} must be at least 1: {hint}"))
    return False


def check_layout(recipe: Recipe, problems: list[Problem]) -> None:
    layout = recipe.layout
    prompts = at_least_one(
        problems, "layout", "rollout_batch_size", layout.rollout_batch_size, "e.g. 16"
    )
    group = layout.n_samples_per_prompt
    if group < 2:
        problems.append(
            Problem(
                "layout.n_samples_per_prompt",
                f"n_samples_per_prompt={group} leaves no group to compare: GRPO needs at least 2 "
                "samples per prompt, e.g. 16",
            )
        )
    else:
        micro = layout.diffusion_microgroup_size
        valid = divisors(group)
        if micro < 1 or micro > group:
            problems.append(
                Problem(
                    "layout.diffusion_microgroup_size",
                    f"diffusion_microgroup_size={micro} must lie between 1 and "
                    f"n_samples_per_prompt={group}: use {or_list(valid)}",
                )
            )
        elif group % micro:
            problems.append(
                Problem(
                    "layout.diffusion_microgroup_size",
                    f"n_samples_per_prompt={group} is not a multiple of "
                    f"diffusion_microgroup_size={micro}: use {or_list(valid)}",
                )
            )
    steps = at_least_one(
        problems, "layout", "num_steps_per_rollout", layout.num_steps_per_rollout, "e.g. 2"
    )
    gpus = at_least_one(problems, "layout", "num_gpus", layout.num_gpus, "e.g. 1")
    tiles = at_least_one(
        problems, "layout", "micro_batch_size_sample", layout.micro_batch_size_sample, "e.g. 4"
    )
    at_least_one(
        problems, "layout", "micro_batch_size_tstep", layout.micro_batch_size_tstep, "e.g. 1"
    )
    window = recipe.sampler.sde_window_size
    if window >= 1 and layout.micro_batch_size_tstep > window:
        problems.append(
            Problem(
                "layout.micro_batch_size_tstep",
                f"micro_batch_size_tstep={layout.micro_batch_size_tstep} exceeds "
                f"sde_window_size={window}: a tile holds at most the window's steps; "
                f"use {near(list(range(1, window + 1)), layout.micro_batch_size_tstep)}",
            )
        )
    if not (prompts and group >= 2 and steps):
        return
    per_rollout = layout.rollout_batch_size * group
    n_steps = layout.num_steps_per_rollout
    if per_rollout % n_steps:
        problems.append(
            Problem(
                "layout.num_steps_per_rollout",
                f"samples_per_rollout = rollout_batch_size x n_samples_per_prompt = "
                f"{layout.rollout_batch_size} x {group} = {per_rollout} does not split evenly "
                f"into num_steps_per_rollout={n_steps} optimizer steps: "
                f"use {near(divisors(per_rollout), n_steps)}",
            )
        )
        return
    global_batch = per_rollout // n_steps
    given = layout.global_batch_size
    if given is not None and given != global_batch:
        problems.append(
            Problem(
                "layout.global_batch_size",
                f"global_batch_size={given} must equal samples_per_rollout / "
                f"num_steps_per_rollout = {per_rollout} / {n_steps} = {global_batch}: "
                f"set global_batch_size={global_batch} or leave it empty",
            )
        )
    if not gpus:
        return
    if global_batch % layout.num_gpus:
        problems.append(
            Problem(
                "layout.num_gpus",
                f"global_batch_size={global_batch} does not split evenly over "
                f"num_gpus={layout.num_gpus}: use {near(divisors(global_batch), layout.num_gpus)}",
            )
        )
        return
    per_rank = global_batch // layout.num_gpus
    if tiles and per_rank % layout.micro_batch_size_sample:
        problems.append(
            Problem(
                "layout.micro_batch_size_sample",
                f"global_batch_size / num_gpus = {global_batch} / {layout.num_gpus} = {per_rank} "
                f"samples per rank do not split into micro_batch_size_sample="
                f"{layout.micro_batch_size_sample} tiles: "
                f"use {near(divisors(per_rank), layout.micro_batch_size_sample)}",
            )
        )
