"""The validator's memory rule: an oversize recipe is refused with the changes that make it fit,
cheapest first, each with what it saves."""

from __future__ import annotations

import re

import pytest

from engine.memory.plan import memory_plan
from engine.overrides import apply_overrides
from engine.presets import preset
from engine.validation import validate
from tests.engine.models import tiny_pipelines

FIX = re.compile(r"(?:, |: |^ )([^,(]+?) \(-(\d+\.\d) GB\)")


def memory_problem(recipe):
    found = [p for p in validate(recipe) if p.field == "layout.gpu_memory_gb"]
    assert len(found) == 1, validate(recipe)
    return found[0].message


def fixes(message):
    """(label, saving) per change listed after 'in order of cost' or 'even with'."""
    tail = message.split("in order of cost" if "in order of cost" in message else "even with")[1]
    return [(label, float(saving)) for label, saving in FIX.findall(tail)]


def check_savings(recipe, found, changes):
    """Each listed saving is the plan without that change (the others kept) minus the plan with
    every change; ``changes`` holds the overrides of each listed change."""
    every = {key: value for change in changes for key, value in change.items()}
    total = memory_plan(apply_overrides(recipe, every)).total_gb
    for (label, saving), change in zip(found, changes, strict=True):
        others = {k: v for c in changes if c is not change for k, v in c.items()}
        without = memory_plan(apply_overrides(recipe, others)).total_gb
        assert saving == pytest.approx(without - total, abs=0.05), label
    return total


def test_an_oversize_recipe_lists_the_fixes_in_order_of_cost():
    # Qwen-Image on one 40 GB GPU without checkpointing: 40.9 GB of bf16 DiT alone.
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"),
        {"gradient_checkpointing": False, "num_gpus": 1, "gpu_memory_gb": 40},
    )
    message = memory_problem(recipe)
    total = memory_plan(recipe).total_gb
    assert message.startswith(
        f"the memory plan needs {total:.1f} GB per GPU, more than gpu_memory_gb=40 (peak while "
        "training: DiT weights 40.9, VAE 0.3, trainable weights 1.7, gradients 1.7, optimizer "
        "state 3.4, rollout store 1.0, training activations 96.6, headroom"
    )
    found = fixes(message)
    # Checkpointing; then, once the DiT is sharded over the fewest GPUs that fit, microgroups of
    # 4 (the VAE decoding 16 images at once is the rollout's peak). Relaxed from 1, the most
    # the first pass could cut before the GPUs were added.
    assert [label for label, _ in found] == [
        "layout.gradient_checkpointing true",
        "layout.diffusion_microgroup_size 16 -> 4",
        "fsdp across 4 GPUs: layout.num_gpus 1 -> 4",
    ]
    changes = [
        {"gradient_checkpointing": True},
        {"diffusion_microgroup_size": 4},
        {"num_gpus": 4, "fsdp": True},
    ]
    fitted = check_savings(recipe, found, changes)
    assert message.endswith(f", which needs {fitted:.1f} GB") and fitted <= 40
    every = {key: value for change in changes for key, value in change.items()}
    assert validate(apply_overrides(recipe, every)) == []


def test_more_gpus_cost_less_than_a_change_of_precision():
    # 2 GPUs in float32: the fp32 DiT (81.7 GB over 2 ranks) and the fp32 encoders (33.2 GB)
    # exceed 40 GB; both changes are needed, listed GPUs first.
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"), {"model.dtype": "float32", "gpu_memory_gb": 40}
    )
    found = fixes(memory_problem(recipe))
    assert [label for label, _ in found] == [
        "layout.diffusion_microgroup_size 16 -> 4",
        "fsdp across 4 GPUs: layout.num_gpus 2 -> 4",
        "model.dtype float32 -> bfloat16",
    ]
    check_savings(
        recipe,
        found,
        [{"diffusion_microgroup_size": 4}, {"num_gpus": 4}, {"model.dtype": "bfloat16"}],
    )


def test_smaller_tiles_shrink_the_training_activations():
    # Qwen-Image tiles of 16 samples x 2 steps: 64 rows, 45.5 GB of checkpointed activations.
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"),
        {"micro_batch_size_sample": 16, "micro_batch_size_tstep": 2, "gpu_memory_gb": 50},
    )
    assert memory_plan(recipe).peak_phase == "train"
    found = fixes(memory_problem(recipe))
    # One step per tile and the largest sample tile that does it (64 samples per rank split
    # into 8s), then microgroups small enough for the rollout, which is the peak after that.
    assert [label for label, _ in found] == [
        "layout.micro_batch_size_tstep 2 -> 1",
        "layout.micro_batch_size_sample 16 -> 8",
        "layout.diffusion_microgroup_size 16 -> 1",
    ]
    check_savings(
        recipe,
        found,
        [
            {"micro_batch_size_tstep": 1},
            {"micro_batch_size_sample": 8},
            {"diffusion_microgroup_size": 1},
        ],
    )


def test_what_cannot_fit_says_so():
    bigger = "lower sampler.height and sampler.width, or use GPUs with more memory and raise it"
    # float32 without checkpointing in 24 GB: even every change of these settings is not enough
    # (the 8.29 B text encoder alone is 16.6 GB in bf16, and no GPU count shards it).
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"),
        {"model.dtype": "float32", "gradient_checkpointing": False, "gpu_memory_gb": 24},
    )
    message = memory_problem(recipe)
    found = fixes(message)
    assert [label for label, _ in found] == [
        "layout.gradient_checkpointing true",
        "layout.diffusion_microgroup_size 16 -> 1",
        "model.dtype float32 -> bfloat16",
    ]
    total = check_savings(
        recipe,
        found,
        [
            {"gradient_checkpointing": True},
            {"diffusion_microgroup_size": 1},
            {"model.dtype": "bfloat16"},
        ],
    )
    assert message.endswith(f" it needs {total:.1f} GB: {bigger}")
    # Already at the smallest microgroup and tile: nothing to change.
    smallest = apply_overrides(
        preset("ocr-qwen-image-2gpu"),
        {"diffusion_microgroup_size": 1, "micro_batch_size_sample": 1, "gpu_memory_gb": 2},
    )
    assert memory_problem(smallest).endswith(
        f"; no change of the layout or precision settings fits it: {bigger}"
    )


def test_every_preset_passes_the_rule():
    for name in ("ocr-qwen-image-2gpu", "pickscore-qwen-image-4gpu", "ocr-sd35", "tiny-color"):
        assert [p for p in validate(preset(name)) if p.field == "layout.gpu_memory_gb"] == []


@pytest.mark.parametrize("budget", [0.0, -80.0, float("nan")])
def test_the_budget_must_be_positive(budget):
    recipe = apply_overrides(preset("tiny-color"), {"gpu_memory_gb": budget})
    assert memory_problem(recipe) == (
        f"gpu_memory_gb={budget} must be positive: the memory of one GPU, e.g. 80 for an H100 "
        "or A100 80 GB"
    )


def test_the_rule_waits_for_valid_layout_settings():
    # An invalid microgroup is reported once; the plan, which needs M, is not computed.
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"), {"diffusion_microgroup_size": 3, "gpu_memory_gb": 2}
    )
    fields = [p.field for p in validate(recipe)]
    assert fields == ["layout.diffusion_microgroup_size"]


def test_unbuildable_configs_at_model_path_are_a_model_path_problem(tmp_path):
    directory = tiny_pipelines.save_sd3(tmp_path / "sd3")
    (directory / "transformer" / "config.json").write_text("[]")
    recipe = apply_overrides(preset("ocr-sd35"), {"model.path": str(directory)})
    problems = {p.field: p.message for p in validate(recipe)}
    assert problems["model.path"].startswith("the memory plan cannot read model.path: ")
    assert "transformer/config.json is not a JSON object" in problems["model.path"]
