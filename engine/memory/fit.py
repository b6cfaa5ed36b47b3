"""The validator's memory rule: a recipe must fit its ``layout.gpu_memory_gb`` by its memory plan,
and when it does not, the problem lists the changes that make it fit, cheapest first.

The changes are tried in a fixed order of what they cost a run: recomputing activations
(checkpointing), moving the text encoders per rollout (offload), smaller training tiles (more
forwards, same learning), smaller microgroups (more requests), sharding over the ranks and then
over more GPUs (FSDP gathers, more hardware), a 16-bit model (precision), and LoRA instead of a
full fine-tune (what is learned). Each is applied on top of the ones before it, with the
smallest step that fits, until the plan fits; every one listed shows what it saves. The search
only computes plans (arithmetic on cached counts), so it costs validation a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.memory.architecture import Architecture, ArchitectureError
from engine.memory.plan import PHASE_WORDS, memory_plan, recipe_architecture
from engine.models.precision import resolved_checkpointing, resolved_dtype, resolved_offload
from engine.problems import Problem
from engine.recipe import Recipe

#: The most GPUs a fix proposes to shard over.
MAX_GPUS = 64

#: Passes over the changes before giving up.
PASSES = 3

#: ``{section: {field: value}}``: what one change sets.
Changes = dict[str, dict[str, Any]]
#: A change's label ("layout.micro_batch_size_sample 4 -> 2") and what it sets.
Option = tuple[str, Changes]


def memory_problems(recipe: Recipe) -> list[Problem]:
    """The memory problem of a recipe whose model, layout and sampler settings are valid, or
    none when it fits."""
    try:
        arch = recipe_architecture(recipe)
    except ArchitectureError as error:
        return [Problem("model.path", f"the memory plan cannot read model.path: {error}")]
    plan = memory_plan(recipe, arch)
    if plan.fits:
        return []
    fixes, fitted = _fixes(recipe, arch)
    listed = ", ".join(f"{label} (-{saving:.1f} GB)" for label, saving in fixes)
    total = memory_plan(fitted, arch).total_gb
    bigger = "lower sampler.height and sampler.width, or use GPUs with more memory and raise it"
    if not fixes:
        advice = f"no change of the layout or precision settings fits it: {bigger}"
    elif total <= recipe.layout.gpu_memory_gb:
        advice = f"to fit, in order of cost: {listed}, which needs {total:.1f} GB"
    else:
        advice = f"even with {listed} it needs {total:.1f} GB: {bigger}"
    return [
        Problem(
            "layout.gpu_memory_gb",
            f"the memory plan needs {plan.total_gb:.1f} GB per GPU, more than gpu_memory_gb="
            f"{recipe.layout.gpu_memory_gb:g} (peak while {PHASE_WORDS[plan.peak_phase]}: "
            f"{plan.summary()}); {advice}",
        )
    ]


def _fixes(recipe: Recipe, arch: Architecture) -> tuple[list[tuple[str, float]], Recipe]:
    """The changes, in order of cost, each with its saving in GB, and the recipe with all.

    The settings' changes are tried in order of cost, pass after pass (one that did not help
    may help once another has moved the peak), each kept where it lowers the plan, with its
    smallest step that fits or else its largest. If that is not enough, more GPUs are tried on
    top, and kept only where they make it fit. Then each change kept, costliest first, is
    relaxed to the least that still fits beside the others, or dropped (a microgroup cut to 1
    on the way may need only 4 once the GPUs are there). Each change's saving is what the plan
    would need without it, the others kept, minus what it needs with them all.
    """
    budget = recipe.layout.gpu_memory_gb
    kept: dict[int, Option] = {}
    current, total = recipe, memory_plan(recipe, arch).total_gb
    for only_fitting in (False, True):
        for _ in range(PASSES):
            progressed = False
            for index, (candidates, only_to_fit) in enumerate(_CANDIDATES):
                if total <= budget:
                    break
                if only_to_fit != only_fitting:
                    continue
                options = [
                    (label, changes, memory_plan(_apply(current, changes), arch).total_gb)
                    for label, changes in candidates(current)
                ]
                fitting = [o for o in options if o[2] <= budget]
                if not fitting and (only_to_fit or not options):
                    continue
                label, changes, after = fitting[0] if fitting else min(options, key=lambda o: o[2])
                if after < total - 0.05:
                    kept[index] = (label, changes)
                    current, total, progressed = _apply(current, changes), after, True
            if total <= budget or not progressed:
                break
    if total <= budget:
        _relax(recipe, arch, kept)
    fitted = _apply_all(recipe, kept)
    total = memory_plan(fitted, arch).total_gb
    fixes: list[tuple[str, float]] = []
    for index in sorted(kept):
        label, changes = kept[index]
        without = _apply_all(recipe, kept, leave_out=index)
        candidates, _ = _CANDIDATES[index]
        # The label from the recipe without it ("16 -> 4" rather than a later pass's "8 -> 4").
        label = next((text for text, c in candidates(without) if c == changes), label)
        fixes.append((label, memory_plan(without, arch).total_gb - total))
    return fixes, fitted


def _apply_all(recipe: Recipe, kept: dict[int, Option], leave_out: int | None = None) -> Recipe:
    """``recipe`` with every kept change but ``leave_out``, in order of cost."""
    for index in sorted(kept):
        if index != leave_out:
            recipe = _apply(recipe, kept[index][1])
    return recipe


def _relax(recipe: Recipe, arch: Architecture, kept: dict[int, Option]) -> None:
    """Replace each kept change, costliest first, by no change or the least one that still fits
    beside the others."""
    budget = recipe.layout.gpu_memory_gb
    for index in sorted(kept, reverse=True):
        label, changes = kept[index]
        base = _apply_all(recipe, kept, leave_out=index)
        candidates, _ = _CANDIDATES[index]
        for trial in [None, *(c for _, c in candidates(base))]:
            if trial == changes:
                break
            if memory_plan(base if trial is None else _apply(base, trial), arch).total_gb <= budget:
                if trial is None:
                    del kept[index]
                else:
                    kept[index] = (label, trial)
                break


def _apply(recipe: Recipe, changes: Changes) -> Recipe:
    """``recipe`` with ``{section: {field: value}}`` set."""
    for section, values in changes.items():
        recipe = replace(recipe, **{section: replace(getattr(recipe, section), **values)})
    return recipe


def _checkpointing(recipe: Recipe) -> list[Option]:
    if resolved_checkpointing(recipe):
        return []
    return [("layout.gradient_checkpointing true", {"layout": {"gradient_checkpointing": True}})]


def _offload(recipe: Recipe) -> list[Option]:
    if resolved_offload(recipe) == "cpu":
        return []
    return [("model.offload_text_encoders cpu", {"model": {"offload_text_encoders": "cpu"}})]


def _tstep_tile(recipe: Recipe) -> list[Option]:
    size = recipe.layout.micro_batch_size_tstep
    return [
        (f"layout.micro_batch_size_tstep {size} -> {v}", {"layout": {"micro_batch_size_tstep": v}})
        for v in range(size - 1, 0, -1)
    ]


def _sample_tile(recipe: Recipe) -> list[Option]:
    lay = recipe.layout
    per_rank = lay.rollout_batch_size * lay.n_samples_per_prompt
    per_rank //= lay.num_steps_per_rollout * lay.num_gpus
    size = lay.micro_batch_size_sample
    return [
        (
            f"layout.micro_batch_size_sample {size} -> {v}",
            {"layout": {"micro_batch_size_sample": v}},
        )
        for v in range(size - 1, 0, -1)
        if per_rank % v == 0
    ]


def _microgroup(recipe: Recipe) -> list[Option]:
    lay = recipe.layout
    size = lay.diffusion_microgroup_size
    return [
        (
            f"layout.diffusion_microgroup_size {size} -> {v}",
            {"layout": {"diffusion_microgroup_size": v}},
        )
        for v in range(size - 1, 0, -1)
        if lay.n_samples_per_prompt % v == 0
    ]


def _shard(recipe: Recipe) -> list[Option]:
    lay = recipe.layout
    if lay.fsdp or lay.num_gpus == 1:
        return []
    return [("layout.fsdp true", {"layout": {"fsdp": True}})]


def _more_gpus(recipe: Recipe) -> list[Option]:
    lay = recipe.layout
    global_batch = lay.rollout_batch_size * lay.n_samples_per_prompt // lay.num_steps_per_rollout
    return [
        (
            f"fsdp across {gpus} GPUs: layout.num_gpus {lay.num_gpus} -> {gpus}"
            + ("" if lay.fsdp else ", layout.fsdp true"),
            {"layout": {"num_gpus": gpus, "fsdp": True}},
        )
        for gpus in range(lay.num_gpus + 1, MAX_GPUS + 1)
        if global_batch % gpus == 0 and (global_batch // gpus) % lay.micro_batch_size_sample == 0
    ]


def _sixteen_bits(recipe: Recipe) -> list[Option]:
    if resolved_dtype(recipe, "cuda").itemsize <= 2:
        return []
    name = recipe.model.dtype or "float32"
    return [(f"model.dtype {name} -> bfloat16", {"model": {"dtype": "bfloat16"}})]


def _adapters(recipe: Recipe) -> list[Option]:
    if recipe.model.lora_target != "full":
        return []
    return [("model.lora_target full -> attn+mlp (LoRA)", {"model": {"lora_target": "attn+mlp"}})]


#: In order of cost; each gives its options, the smallest change first, and whether it is
#: proposed only when one of them fits (more GPUs that still do not fit are no advice).
_CANDIDATES: tuple[tuple[Callable[[Recipe], list[Option]], bool], ...] = (
    (_checkpointing, False),
    (_offload, False),
    (_tstep_tile, False),
    (_sample_tile, False),
    (_microgroup, False),
    (_shard, False),
    (_more_gpus, True),
    (_sixteen_bits, False),
    (_adapters, False),
)
