"""The numbers a recipe implies: batching, DiT work, optimizer steps, tiles and seeds.

Seeds follow DESIGN.md section 1 exactly, so that a sample's noise depends only on the run's seed,
its rollout, its group and its index, never on ``diffusion_microgroup_size`` or batching.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from engine.memory.plan import memory_plan
from engine.models.families import FAMILIES
from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.validation import validate

SEED_MODULUS = 2**31


def rollout_seed(seed: int, rollout_index: int, rollout_batch_size: int, group_size: int) -> int:
    """Rollout k's seed: (seed + k x P x G) mod 2^31, so consecutive rollouts never share one."""
    return (seed + rollout_index * rollout_batch_size * group_size) % SEED_MODULUS


def sample_seed(rollout_seed: int, group_index: int, sample_index: int, group_size: int) -> int:
    """Sample i of group g: (rollout_seed + g x G + i) mod 2^31; it seeds that sample's noise."""
    return (rollout_seed + group_index * group_size + sample_index) % SEED_MODULUS


def sde_window_start(rollout_seed: int, window_range: tuple[int, int]) -> int:
    """The first stochastic step of a rollout, drawn uniformly from the inclusive range.

    ``random.Random`` seeded with an int gives the same draw on every platform and Python 3
    version, and it is drawn once per rollout, so every group and every microgroup share it.
    """
    first, last = window_range
    return random.Random(rollout_seed).randint(first, last)


@dataclass(frozen=True)
class Layout:
    """What one rollout of a valid recipe costs and how it is cut; see ``layout``."""

    samples_per_rollout: int
    requests_per_prompt: int
    requests_per_rollout: int
    #: DiT forwards per denoising step and request: 2 with Qwen-Image's true CFG, else 1.
    forwards_per_denoising_step: int
    #: Rows in one DiT forward: M, or 2M where SD3-style CFG batches the unconditional rows.
    rows_per_dit_forward: int
    dit_forwards_per_request: int
    dit_forwards_per_rollout: int
    optimizer_steps_per_rollout: int
    global_batch_size: int
    samples_per_rank_per_step: int
    #: Tiles per rank per optimizer step: sample tiles x step tiles per sample.
    tiles_per_rank_per_step: int
    sample_tiles_per_rank_per_step: int
    tstep_tiles_per_sample: int
    num_rollouts: int
    rollout_index: int
    rollout_seed: int
    #: The stochastic, trained steps of this rollout, in order.
    sde_window: tuple[int, ...]
    #: Samples per prompt group (G), for ``group_seeds``.
    n_samples_per_prompt: int

    def group_seeds(self, group_index: int) -> tuple[int, ...]:
        """The seeds of group ``group_index``'s samples in this rollout, in sample order.

        Computed per group rather than stored: a layout stays O(1) in size whatever P x G is.
        """
        group = self.n_samples_per_prompt
        return tuple(sample_seed(self.rollout_seed, group_index, i, group) for i in range(group))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for events and JSON (tuples become lists), with the first group's seeds:
        every other group's follow from ``sample_seed``."""
        return {**_lists(asdict(self)), "first_group_seeds": list(self.group_seeds(0))}


def layout(recipe: Recipe, rollout_index: int = 0) -> Layout:
    """Derive the layout of a valid recipe, with the seeds of rollout ``rollout_index``.

    Raises ``RecipeError`` with the recipe's problems if it is not valid: every division below is
    exact only because validation checked it.
    """
    problems = validate(recipe)
    if problems:
        raise RecipeError(problems)
    lay, sampler = recipe.layout, recipe.sampler
    prompts, group, micro = (
        lay.rollout_batch_size,
        lay.n_samples_per_prompt,
        lay.diffusion_microgroup_size,
    )
    guidance = FAMILIES[recipe.model.family].guidance
    true_cfg = guidance == "true-cfg" and sampler.true_cfg_scale > 1.0
    batched_cfg = guidance == "cfg" and sampler.guidance_scale > 1.0
    forwards_per_step = 2 if true_cfg else 1
    requests_per_prompt = group // micro
    requests = prompts * requests_per_prompt
    samples = prompts * group
    global_batch = samples // lay.num_steps_per_rollout
    per_rank = global_batch // lay.num_gpus
    sample_tiles = per_rank // lay.micro_batch_size_sample
    # A window that the step tile does not divide ends with a shorter tile.
    tstep_tiles = math.ceil(sampler.sde_window_size / lay.micro_batch_size_tstep)
    seed = rollout_seed(recipe.run.seed, rollout_index, prompts, group)
    start = sde_window_start(seed, sampler.sde_window_range)
    return Layout(
        samples_per_rollout=samples,
        requests_per_prompt=requests_per_prompt,
        requests_per_rollout=requests,
        forwards_per_denoising_step=forwards_per_step,
        rows_per_dit_forward=micro * (2 if batched_cfg else 1),
        dit_forwards_per_request=sampler.num_inference_steps * forwards_per_step,
        dit_forwards_per_rollout=requests * sampler.num_inference_steps * forwards_per_step,
        optimizer_steps_per_rollout=lay.num_steps_per_rollout,
        global_batch_size=global_batch,
        samples_per_rank_per_step=per_rank,
        tiles_per_rank_per_step=sample_tiles * tstep_tiles,
        sample_tiles_per_rank_per_step=sample_tiles,
        tstep_tiles_per_sample=tstep_tiles,
        num_rollouts=recipe.run.max_steps // lay.num_steps_per_rollout,
        rollout_index=rollout_index,
        rollout_seed=seed,
        sde_window=tuple(range(start, start + sampler.sde_window_size)),
        n_samples_per_prompt=group,
    )


def layout_report(recipe: Recipe) -> dict[str, Any]:
    """A valid recipe's layout (seeds of its first rollout) with its memory plan under
    ``memory``: what the API's layout answers and ``python -m engine layout --json`` print."""
    return {**layout(recipe).to_dict(), "memory": memory_plan(recipe).to_dict()}


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(item) for item in value]
    return value
