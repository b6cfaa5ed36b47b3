"""Layout arithmetic for every preset, worked out by hand, and the seed formulas of DESIGN.md."""

import json

import pytest

from engine.layout import layout, rollout_seed, sample_seed, sde_window_start
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.problems import RecipeError
from engine.recipe import Recipe

# Per preset, by hand. P prompts x G samples; M per request; N denoising steps; true CFG doubles
# Qwen-Image's forwards, SD3 CFG doubles the rows of each forward instead.
EXPECTED = {
    "tiny-color": dict(
        samples_per_rollout=32,  # P x G = 4 x 8
        requests_per_prompt=1,  # G / M = 8 / 8
        requests_per_rollout=4,  # P x 1
        forwards_per_denoising_step=1,  # guidance_scale 1.0: no CFG
        rows_per_dit_forward=8,  # M
        dit_forwards_per_request=8,  # N = 8
        dit_forwards_per_rollout=32,  # 4 requests x 8
        optimizer_steps_per_rollout=1,
        global_batch_size=32,  # 32 / 1
        samples_per_rank_per_step=32,  # 32 / 1 GPU
        sample_tiles_per_rank_per_step=4,  # 32 / 8
        tstep_tiles_per_sample=2,  # window 2 / 1 step per tile
        tiles_per_rank_per_step=8,  # 4 x 2
        num_rollouts=200,  # 200 steps / 1
    ),
    "ocr-qwen-image-2gpu": dict(
        samples_per_rollout=256,  # 16 x 16
        requests_per_prompt=1,  # 16 / 16
        requests_per_rollout=16,
        forwards_per_denoising_step=2,  # true_cfg_scale 4: a negative-prompt forward
        rows_per_dit_forward=16,
        dit_forwards_per_request=20,  # 10 steps x 2
        dit_forwards_per_rollout=320,  # 16 x 20
        optimizer_steps_per_rollout=2,
        global_batch_size=128,  # 256 / 2
        samples_per_rank_per_step=64,  # 128 / 2 GPUs
        sample_tiles_per_rank_per_step=16,  # 64 / 4
        tstep_tiles_per_sample=2,  # 2 / 1
        tiles_per_rank_per_step=32,  # 16 x 2
        num_rollouts=300,  # 600 / 2
    ),
    "ocr-qwen-image-4gpu": dict(
        samples_per_rollout=512,  # 32 x 16
        requests_per_prompt=1,
        requests_per_rollout=32,
        forwards_per_denoising_step=2,
        rows_per_dit_forward=16,
        dit_forwards_per_request=20,
        dit_forwards_per_rollout=640,  # 32 x 20
        optimizer_steps_per_rollout=2,
        global_batch_size=256,  # 512 / 2
        samples_per_rank_per_step=64,  # 256 / 4 GPUs
        sample_tiles_per_rank_per_step=16,
        tstep_tiles_per_sample=2,
        tiles_per_rank_per_step=32,
        num_rollouts=300,
    ),
    "pickscore-qwen-image-2gpu": dict(
        samples_per_rollout=256,
        requests_per_prompt=1,
        requests_per_rollout=16,
        forwards_per_denoising_step=2,
        rows_per_dit_forward=16,
        dit_forwards_per_request=20,
        dit_forwards_per_rollout=320,
        optimizer_steps_per_rollout=2,
        global_batch_size=128,
        samples_per_rank_per_step=64,
        sample_tiles_per_rank_per_step=16,
        tstep_tiles_per_sample=2,
        tiles_per_rank_per_step=32,
        num_rollouts=300,
    ),
    "pickscore-qwen-image-4gpu": dict(
        samples_per_rollout=512,  # 32 x 16
        requests_per_prompt=2,  # 16 / M=8
        requests_per_rollout=64,  # 32 x 2
        forwards_per_denoising_step=2,
        rows_per_dit_forward=8,
        dit_forwards_per_request=20,
        dit_forwards_per_rollout=1280,  # 64 x 20
        optimizer_steps_per_rollout=2,
        global_batch_size=256,
        samples_per_rank_per_step=64,
        sample_tiles_per_rank_per_step=16,
        tstep_tiles_per_sample=2,
        tiles_per_rank_per_step=32,
        num_rollouts=300,
    ),
    "ocr-sd35": dict(
        samples_per_rollout=1152,  # 48 x 24
        requests_per_prompt=3,  # 24 / 8
        requests_per_rollout=144,  # 48 x 3
        forwards_per_denoising_step=1,  # SD3 CFG is batched, not a second forward
        rows_per_dit_forward=16,  # 2 x M: unconditional rows beside the conditional ones
        dit_forwards_per_request=10,
        dit_forwards_per_rollout=1440,  # 144 x 10
        optimizer_steps_per_rollout=2,
        global_batch_size=576,  # 1152 / 2
        samples_per_rank_per_step=72,  # 576 / 8 GPUs
        sample_tiles_per_rank_per_step=8,  # 72 / 9
        tstep_tiles_per_sample=9,  # window 9 / 1
        tiles_per_rank_per_step=72,  # 8 x 9
        num_rollouts=600,  # 1200 / 2
    ),
}
EXPECTED["pickscore-sd35"] = EXPECTED["ocr-sd35"]


def test_every_preset_has_a_worked_layout():
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_layout_numbers(name):
    derived = layout(PRESETS[name].recipe)
    for key, value in EXPECTED[name].items():
        assert getattr(derived, key) == value, key


def test_tiny_color_seeds_of_the_first_two_rollouts():
    recipe = PRESETS["tiny-color"].recipe
    first = layout(recipe)
    # rollout_seed = 42 + 0 x 32; sample (g, i) = 42 + 8g + i.
    assert first.rollout_seed == 42
    assert tuple(first.group_seeds(g) for g in range(4)) == (
        tuple(range(42, 50)),
        tuple(range(50, 58)),
        tuple(range(58, 66)),
        tuple(range(66, 74)),
    )
    second = layout(recipe, rollout_index=1)
    # rollout_seed = 42 + 1 x 4 x 8 = 74: it starts where rollout 0's seeds end.
    assert second.rollout_seed == 74
    assert second.group_seeds(0) == tuple(range(74, 82))
    assert second.group_seeds(3)[7] == 74 + 3 * 8 + 7


def test_qwen_image_seeds():
    derived = layout(PRESETS["ocr-qwen-image-2gpu"].recipe, rollout_index=3)
    # 42 + 3 x 16 x 16 = 810; last sample: 810 + 15 x 16 + 15 = 1065.
    assert derived.rollout_seed == 810
    assert derived.group_seeds(15)[15] == 1065
    assert all(len(derived.group_seeds(g)) == 16 for g in range(16))


def test_seeds_wrap_at_two_to_the_31():
    assert rollout_seed(2**31 - 1, 1, 4, 4) == 15  # (2^31 - 1 + 16) mod 2^31
    assert sample_seed(2**31 - 2, 0, 3, 4) == 1  # (2^31 - 2 + 3) mod 2^31


def test_seeds_do_not_depend_on_the_microgroup():
    seeds = {
        micro: [
            layout(apply_overrides(Recipe(), {"diffusion_microgroup_size": micro})).group_seeds(g)
            for g in range(4)
        ]
        for micro in (1, 2, 4)
    }
    assert seeds[1] == seeds[2] == seeds[4]


def test_window_start_is_pinned_and_inside_the_range():
    # random.Random(seed).randint is stable across platforms and Python 3 versions.
    assert sde_window_start(42, (0, 4)) == 0
    assert [sde_window_start(s, (0, 4)) for s in range(5)] == [
        sde_window_start(s, (0, 4)) for s in range(5)
    ]
    starts = {sde_window_start(seed, (1, 3)) for seed in range(300)}
    assert starts == {1, 2, 3}
    assert sde_window_start(7, (5, 5)) == 5


def test_window_of_the_layout_follows_the_rollout_seed():
    recipe = PRESETS["pickscore-qwen-image-2gpu"].recipe
    for index in range(10):
        derived = layout(recipe, rollout_index=index)
        start = sde_window_start(derived.rollout_seed, (0, 4))
        assert derived.sde_window == (start, start + 1)
    # SD3.5 trains every step but the last.
    assert layout(PRESETS["ocr-sd35"].recipe).sde_window == tuple(range(9))


def test_step_tiles_round_up_when_the_window_does_not_divide():
    recipe = apply_overrides(
        Recipe(), {"sde_window_size": 3, "micro_batch_size_tstep": 2, "sde_window_range": [0, 2]}
    )
    derived = layout(recipe)
    assert derived.tstep_tiles_per_sample == 2  # steps (2 + 1): a full tile and a short one
    assert derived.tiles_per_rank_per_step == 4 * 2


def test_invalid_recipe_has_no_layout():
    recipe = apply_overrides(Recipe(), {"n_samples_per_prompt": 16, "diffusion_microgroup_size": 6})
    with pytest.raises(RecipeError, match="use 1, 2, 4, 8 or 16"):
        layout(recipe)


def test_layout_to_dict_is_json():
    data = layout(PRESETS["tiny-color"].recipe).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["first_group_seeds"] == list(range(42, 50))
