"""The presets hold the published values and are valid recipes."""

import pytest

from engine.presets import PRESETS, preset
from engine.recipe import RewardSpec
from engine.validation import check_paths, validate

QWEN = [
    "ocr-qwen-image-2gpu",
    "ocr-qwen-image-4gpu",
    "pickscore-qwen-image-2gpu",
    "pickscore-qwen-image-4gpu",
]
SD35 = ["ocr-sd35", "pickscore-sd35"]


def test_the_presets():
    assert list(PRESETS) == ["tiny-color", *QWEN, *SD35]
    for name, item in PRESETS.items():
        assert item.name == name
        assert item.description and item.source


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid(name):
    assert validate(PRESETS[name].recipe) == []


def test_tiny_color_is_the_cpu_demo_and_needs_no_files(tmp_path):
    recipe = preset("tiny-color")
    assert (recipe.model.family, recipe.model.lora_target) == ("tiny", "full")
    assert recipe.layout.n_samples_per_prompt == recipe.layout.diffusion_microgroup_size == 8
    assert recipe.sampler.sde_window_range == (0, 0)
    assert recipe.rewards == (RewardSpec("color", 1.0),)
    assert check_paths(recipe, root=tmp_path) == []


@pytest.mark.parametrize("name", QWEN)
def test_qwen_image_presets_hold_the_published_recipe(name):
    recipe = preset(name)
    assert recipe.model.family == "qwen-image"
    assert (recipe.model.lora_rank, recipe.model.lora_alpha) == (64, 128.0)
    sampler = recipe.sampler
    assert (sampler.height, sampler.width) == (512, 512)
    assert (sampler.num_inference_steps, sampler.eval_num_inference_steps) == (10, 50)
    assert sampler.true_cfg_scale == 4.0
    assert (sampler.sde_type, sampler.noise_level) == ("sde", 1.2)
    assert (sampler.sde_window_size, sampler.sde_window_range) == (2, (0, 4))
    optimiser = recipe.optimiser
    assert (optimiser.lr, optimiser.weight_decay, optimiser.clip_range) == (3e-4, 1e-4, 1e-4)
    assert optimiser.kl_beta == 0.0
    assert optimiser.globalize_reward_std is True
    assert recipe.layout.num_steps_per_rollout == 2
    assert recipe.layout.n_samples_per_prompt == 16
    gpus = 4 if name.endswith("4gpu") else 2
    assert recipe.layout.num_gpus == gpus
    assert recipe.layout.rollout_batch_size == {2: 16, 4: 32}[gpus]
    expected_micro = 8 if name == "pickscore-qwen-image-4gpu" else 16
    assert recipe.layout.diffusion_microgroup_size == expected_micro


@pytest.mark.parametrize(("name", "kl_beta"), [("ocr-sd35", 0.04), ("pickscore-sd35", 0.01)])
def test_sd35_presets_hold_the_paper_recipe(name, kl_beta):
    recipe = preset(name)
    assert recipe.model.family == "sd3"
    assert (recipe.model.lora_rank, recipe.model.lora_alpha) == (32, 64.0)
    sampler = recipe.sampler
    assert (sampler.num_inference_steps, sampler.eval_num_inference_steps) == (10, 40)
    assert sampler.guidance_scale == 4.5
    assert sampler.noise_level == 0.7
    assert recipe.optimiser.kl_beta == kl_beta
    assert recipe.layout.n_samples_per_prompt == 24


@pytest.mark.parametrize(
    ("name", "reward", "dataset"),
    [
        ("ocr-qwen-image-2gpu", "ocr", "dataset/ocr"),
        ("pickscore-qwen-image-4gpu", "pickscore", "dataset/pickscore"),
        ("ocr-sd35", "ocr", "dataset/ocr"),
        ("pickscore-sd35", "pickscore", "dataset/pickscore"),
    ],
)
def test_model_presets_name_their_reward_and_dataset(name, reward, dataset):
    recipe = preset(name)
    assert [spec.name for spec in recipe.rewards] == [reward]
    assert recipe.data.dataset == dataset
    assert recipe.data.prompts == ()


def test_model_presets_ask_for_local_weights(tmp_path):
    # Nothing is downloaded: a preset names no machine's paths, so check_paths asks for them.
    fields = {p.field for p in check_paths(preset("ocr-sd35"), root=tmp_path)}
    assert fields == {"model.path", "data.dataset", "rewards[0].path"}


def test_unknown_preset():
    with pytest.raises(KeyError, match="no preset named 'sdxl': use one of tiny-color, "):
        preset("sdxl")


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        PRESETS["mine"] = PRESETS["tiny-color"]
