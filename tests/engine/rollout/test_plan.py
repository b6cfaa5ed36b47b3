from __future__ import annotations

import pytest

from engine.layout import layout
from engine.overrides import apply_overrides
from engine.presets import preset
from engine.rollout import evaluation_requests, rollout_requests

PROMPTS = ["a red image", "a green image", "a blue image", "a yellow image"]


def test_requests_carry_the_layout_seeds_and_window():
    recipe = apply_overrides(
        preset("tiny-color"), {"n_samples_per_prompt": 4, "diffusion_microgroup_size": 2}
    )
    plan = layout(recipe, 3)
    requests = rollout_requests(recipe, PROMPTS, 3)
    assert len(requests) == plan.requests_per_rollout == 8
    assert [r.prompt for r in requests[:2]] == ["a red image"] * 2
    assert [r.group_index for r in requests] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert requests[0].seeds + requests[1].seeds == plan.group_seeds(0)
    assert {r.sde_step_indices for r in requests} == {plan.sde_window}


def test_changing_m_changes_no_seed():
    recipe = preset("tiny-color")
    by_four = rollout_requests(recipe, PROMPTS, 1)
    recipe_one = apply_overrides(recipe, {"diffusion_microgroup_size": 1})
    by_one = rollout_requests(recipe_one, PROMPTS, 1)
    assert [s for r in by_four for s in r.seeds] == [s for r in by_one for s in r.seeds]
    assert {r.sde_step_indices for r in by_one} == {by_four[0].sde_step_indices}


def test_one_prompt_per_group_is_required():
    with pytest.raises(ValueError, match="rollout_batch_size=4"):
        rollout_requests(preset("tiny-color"), PROMPTS[:3], 0)


def test_evaluation_is_an_ode_with_fixed_seeds():
    recipe = preset("tiny-color")
    first = evaluation_requests(recipe, PROMPTS, samples_per_prompt=2)
    assert first == evaluation_requests(recipe, PROMPTS, samples_per_prompt=2)
    assert all(r.sde_step_indices == () and r.noise_level == 0.0 for r in first)
    assert all(r.num_inference_steps == recipe.sampler.eval_num_inference_steps for r in first)
    train_seeds = {
        s for k in range(3) for r in rollout_requests(recipe, PROMPTS, k) for s in r.seeds
    }
    assert not train_seeds & {s for r in first for s in r.seeds}
