"""Every validation rule, valid and invalid; messages name the field and the fix."""

import math

import pytest

from engine.overrides import apply_overrides
from engine.recipe import Recipe
from engine.validation import check_paths, divisors, validate

# The defaults (the tiny demo) are valid: P=4, G=4, M=4, 1 step per rollout, 1 GPU, tiles of
# 4 samples x 1 step, 8 denoising steps, window 2 starting in 0..4, 32 x 32 px, tiny family.


def problems(**overrides):
    """Field -> message for the defaults with ``overrides`` applied."""
    recipe = apply_overrides(Recipe(), overrides)
    return {p.field: p.message for p in validate(recipe)}


# (overrides, field, message): each rule's failing case.
INVALID = [
    # model
    (
        {"family": "sd4"},
        "model.family",
        "family='sd4' is not a known model family: use tiny, sd3, qwen-image or flux",
    ),
    ({"lora_rank": 0}, "model.lora_rank", "lora_rank=0 must be at least 1: e.g. 32"),
    (
        {"lora_alpha": 0.0},
        "model.lora_alpha",
        "lora_alpha=0.0 must be positive: e.g. twice lora_rank",
    ),
    (
        {"lora_target": "mlp"},
        "model.lora_target",
        "lora_target='mlp' is unknown: use attn, attn+mlp or full",
    ),
    (
        {"model.dtype": "bf16"},
        "model.dtype",
        "dtype='bf16' is unknown: use bfloat16, float16 or float32, or leave it empty (bfloat16 "
        "for real models on a GPU, float32 for the tiny model and on the CPU)",
    ),
    (
        {"model.dtype": "float16", "num_gpus": 2},
        "model.dtype",
        "dtype='float16' needs loss scaling, whose overflow check runs per rank, and fsdp ranks "
        "hold different gradient shards (num_gpus=2): use bfloat16, or set fsdp=false",
    ),
    (
        {"offload_text_encoders": "disk"},
        "model.offload_text_encoders",
        "offload_text_encoders='disk' is unknown: use cpu or none, or leave it empty (cpu for "
        "qwen-image, none otherwise)",
    ),
    # data
    (
        {"prompts": []},
        "data.prompts",
        "no prompts: set data.dataset to a prompt directory or list data.prompts",
    ),
    (
        {"dataset": "dataset/ocr"},
        "data.prompts",
        "both dataset='dataset/ocr' and inline prompts are set: keep only one",
    ),
    ({"prompts": ["a red image", " "]}, "data.prompts[1]", "prompts[1] is blank: remove it"),
    ({"eval_prompts": [""]}, "data.eval_prompts[0]", "eval_prompts[0] is blank: remove it"),
    # rewards
    (
        {"rewards": []},
        "rewards",
        'rewards is empty: list at least one, e.g. [{"name": "color", "weight": 1.0}]',
    ),
    (
        {"rewards": [{"name": "colour"}]},
        "rewards[0].name",
        "rewards[0].name='colour' is not a known reward: "
        "use color, color_pixel, ocr, pickscore or remote",
    ),
    (
        {"rewards": [{"name": "color"}, {"name": "color", "weight": 2.0}]},
        "rewards[1].name",
        "reward 'color' is listed twice: merge the entries into one weight",
    ),
    (
        {"rewards": [{"name": "color", "weight": -1.0}, {"name": "color_pixel"}]},
        "rewards[0].weight",
        "rewards[0].weight=-1.0 must be 0 or more: use e.g. 1.0",
    ),
    (
        {"rewards": [{"name": "color", "weight": 0.0}]},
        "rewards",
        "every reward weight is 0: give at least one a positive weight",
    ),
    (
        {"rewards": [{"name": "color", "path": "/weights"}]},
        "rewards[0].path",
        "rewards[0].path is set but 'color' has no weights to load: leave it empty",
    ),
    # layout
    (
        {"rollout_batch_size": 0},
        "layout.rollout_batch_size",
        "rollout_batch_size=0 must be at least 1: e.g. 16",
    ),
    (
        {"n_samples_per_prompt": 1, "diffusion_microgroup_size": 1},
        "layout.n_samples_per_prompt",
        "n_samples_per_prompt=1 leaves no group to compare: GRPO needs at least 2 samples per "
        "prompt, e.g. 16",
    ),
    (
        # DESIGN.md's own example.
        {"n_samples_per_prompt": 16, "diffusion_microgroup_size": 6},
        "layout.diffusion_microgroup_size",
        "n_samples_per_prompt=16 is not a multiple of diffusion_microgroup_size=6: "
        "use 1, 2, 4, 8 or 16",
    ),
    (
        {"n_samples_per_prompt": 16, "diffusion_microgroup_size": 32},
        "layout.diffusion_microgroup_size",
        "diffusion_microgroup_size=32 must lie between 1 and n_samples_per_prompt=16: "
        "use 1, 2, 4, 8 or 16",
    ),
    (
        {"diffusion_microgroup_size": 0},
        "layout.diffusion_microgroup_size",
        "diffusion_microgroup_size=0 must lie between 1 and n_samples_per_prompt=4: use 1, 2 or 4",
    ),
    (
        # 4 x 4 = 16 samples: divisors 1, 2, 4, 8, 16.
        {"num_steps_per_rollout": 3, "max_steps": 3, "checkpoint_every": 3, "eval_every": 3},
        "layout.num_steps_per_rollout",
        "samples_per_rollout = rollout_batch_size x n_samples_per_prompt = 4 x 4 = 16 does not "
        "split evenly into num_steps_per_rollout=3 optimizer steps: use 1, 2, 4, 8 or 16",
    ),
    (
        {"num_steps_per_rollout": 0},
        "layout.num_steps_per_rollout",
        "num_steps_per_rollout=0 must be at least 1: e.g. 2",
    ),
    (
        # Floor division would quietly drop 16 - 3 x 5 = 1 sample per rollout; the rule forbids it.
        {"global_batch_size": 5},
        "layout.global_batch_size",
        "global_batch_size=5 must equal samples_per_rollout / num_steps_per_rollout = 16 / 1 = 16: "
        "set global_batch_size=16 or leave it empty",
    ),
    (
        {"num_gpus": 3},
        "layout.num_gpus",
        "global_batch_size=16 does not split evenly over num_gpus=3: use 1, 2, 4, 8 or 16",
    ),
    ({"num_gpus": 0}, "layout.num_gpus", "num_gpus=0 must be at least 1: e.g. 1"),
    (
        # 16 samples on 2 GPUs = 8 per rank.
        {"num_gpus": 2, "micro_batch_size_sample": 3},
        "layout.micro_batch_size_sample",
        "global_batch_size / num_gpus = 16 / 2 = 8 samples per rank do not split into "
        "micro_batch_size_sample=3 tiles: use 1, 2, 4 or 8",
    ),
    (
        {"micro_batch_size_sample": 0},
        "layout.micro_batch_size_sample",
        "micro_batch_size_sample=0 must be at least 1: e.g. 4",
    ),
    (
        {"micro_batch_size_tstep": 3},
        "layout.micro_batch_size_tstep",
        "micro_batch_size_tstep=3 exceeds sde_window_size=2: a tile holds at most the window's "
        "steps; use 1 or 2",
    ),
    (
        {"micro_batch_size_tstep": 0},
        "layout.micro_batch_size_tstep",
        "micro_batch_size_tstep=0 must be at least 1: e.g. 1",
    ),
    # sampler
    (
        {"family": "sd3", "height": 500, "width": 512},
        "sampler.height",
        "height=500 is not a multiple of 16 (sd3: VAE 8 x patch 2): use 496 or 512",
    ),
    (
        {"width": 30},
        "sampler.width",
        "width=30 is not a multiple of 4 (tiny: VAE 1 x patch 4): use 28 or 32",
    ),
    (
        {"width": 2},
        "sampler.width",
        "width=2 is not a multiple of 4 (tiny: VAE 1 x patch 4): use 4",
    ),
    ({"height": 0}, "sampler.height", "height=0 must be positive: e.g. 512"),
    (
        {"num_inference_steps": 1},
        "sampler.num_inference_steps",
        "num_inference_steps=1 must be at least 2: the last step is never trained, so fewer "
        "leave nothing to train; e.g. 10",
    ),
    (
        {"eval_num_inference_steps": 0},
        "sampler.eval_num_inference_steps",
        "eval_num_inference_steps=0 must be at least 1: e.g. 40",
    ),
    (
        {"guidance_scale": 0.5},
        "sampler.guidance_scale",
        "guidance_scale=0.5 must be at least 1.0: 1.0 turns guidance off",
    ),
    (
        {"family": "qwen-image", "true_cfg_scale": 0.0, "height": 512, "width": 512},
        "sampler.true_cfg_scale",
        "true_cfg_scale=0.0 must be at least 1.0: 1.0 turns guidance off",
    ),
    (
        {"family": "sd3", "true_cfg_scale": 4.0, "height": 512, "width": 512},
        "sampler.true_cfg_scale",
        "true_cfg_scale=4.0 applies to qwen-image only: set it to 1.0 and use guidance_scale "
        "for sd3",
    ),
    (
        {"family": "qwen-image", "guidance_scale": 4.0, "height": 512, "width": 512},
        "sampler.guidance_scale",
        "guidance_scale=4.0 has no effect on qwen-image: set it to 1.0 and use true_cfg_scale "
        "for guidance",
    ),
    (
        {"sde_type": "ode"},
        "sampler.sde_type",
        "sde_type='ode' is unknown: use sde or cps",
    ),
    (
        {"noise_level": 0.0},
        "sampler.noise_level",
        "noise_level=0.0 is outside (0, 1.41) for sde_type='sde': 0 samples nothing to train on "
        "and from sqrt(2) up the first step flips the latent's sign; Flow-GRPO uses 0.7 (SD3.5) "
        "and 1.2 (Qwen-Image)",
    ),
    (
        {"noise_level": 1.5},
        "sampler.noise_level",
        "noise_level=1.5 is outside (0, 1.41) for sde_type='sde': 0 samples nothing to train on "
        "and from sqrt(2) up the first step flips the latent's sign; Flow-GRPO uses 0.7 (SD3.5) "
        "and 1.2 (Qwen-Image)",
    ),
    (
        {"sde_type": "cps", "noise_level": 1.2},
        "sampler.noise_level",
        "noise_level=1.2 is outside (0, 1] for sde_type='cps': the step's std is "
        "t_next x sin(noise_level x pi / 2); e.g. 0.8",
    ),
    (
        {"sde_window_size": 0},
        "sampler.sde_window_size",
        "sde_window_size=0 trains no step: use at least 1",
    ),
    (
        {"sde_window_range": [3, 1]},
        "sampler.sde_window_range",
        "sde_window_range=(3, 1) must satisfy 0 <= first <= last: use e.g. (1, 3)",
    ),
    (
        {"sde_window_range": [-1, 2]},
        "sampler.sde_window_range",
        "sde_window_range=(-1, 2) must satisfy 0 <= first <= last: use e.g. (0, 2)",
    ),
    (
        # 8 steps: 0..7; a window of 2 starting at 6 covers 6 and 7, and 7 is the last.
        {"sde_window_range": [0, 6]},
        "sampler.sde_window_range",
        "sde_window_range=(0, 6) with sde_window_size=2 reaches step 7, but the last step, 7 of "
        "num_inference_steps=8, is never stochastic (its tiny sigma overflows the Gaussian "
        "likelihood): keep the range within (0, 5)",
    ),
    (
        {"sde_window_size": 8, "sde_window_range": [0, 0]},
        "sampler.sde_window_size",
        "sde_window_size=8 does not fit before the last of num_inference_steps=8 steps, which is "
        "never stochastic: use at most 7",
    ),
    # optimiser
    ({"lr": 0.0}, "optimiser.lr", "lr=0.0 must be positive: e.g. 3e-4"),
    ({"lr": math.nan}, "optimiser.lr", "lr=nan must be positive: e.g. 3e-4"),
    (
        {"clip_range": -1e-4},
        "optimiser.clip_range",
        "clip_range=-0.0001 must be positive: e.g. 1e-4, as Flow-GRPO",
    ),
    ({"adv_clip_max": 0.0}, "optimiser.adv_clip_max", "adv_clip_max=0.0 must be positive: e.g. 5"),
    (
        {"max_grad_norm": 0.0},
        "optimiser.max_grad_norm",
        "max_grad_norm=0.0 must be positive: e.g. 1.0",
    ),
    (
        {"weight_decay": -0.1},
        "optimiser.weight_decay",
        "weight_decay=-0.1 must be 0 or more: e.g. 1e-4",
    ),
    (
        {"kl_beta": -0.01},
        "optimiser.kl_beta",
        "kl_beta=-0.01 must be 0 or more: 0 turns the KL term off; Flow-GRPO uses 0.01 to 0.04",
    ),
    # run
    ({"seed": -1}, "run.seed", "seed=-1 must lie in [0, 2^31): e.g. 42"),
    ({"seed": 2**31}, "run.seed", "seed=2147483648 must lie in [0, 2^31): e.g. 42"),
    ({"max_steps": 0}, "run.max_steps", "max_steps=0 must be at least 1: e.g. 600"),
    (
        {"num_steps_per_rollout": 2, "max_steps": 25, "checkpoint_every": 10, "eval_every": 4},
        "run.max_steps",
        "max_steps=25 is not a multiple of num_steps_per_rollout=2: a run ends on a rollout "
        "boundary; use 24 or 26",
    ),
    (
        {"num_steps_per_rollout": 2, "max_steps": 20, "checkpoint_every": 3, "eval_every": 4},
        "run.checkpoint_every",
        "checkpoint_every=3 is not a multiple of num_steps_per_rollout=2: checkpoints fall "
        "between rollouts; use 2 or 4",
    ),
    (
        {"num_steps_per_rollout": 2, "max_steps": 20, "checkpoint_every": 4, "eval_every": 1},
        "run.eval_every",
        "eval_every=1 is not a multiple of num_steps_per_rollout=2: evaluations fall between "
        "rollouts; use 2",
    ),
    ({"eval_every": -1}, "run.eval_every", "eval_every=-1 must be 0 (never) or more"),
    ({"backend": "vllm"}, "rollout.backend", "backend='vllm' is unknown: use in_process or sglang"),
    (
        {"backend": "sglang"},
        "rollout.server_urls",
        "backend='sglang' with launch='external' needs server_urls: list the servers, e.g. "
        "[\"http://gpu1:30000\"], or set launch='colocated'",
    ),
    (
        {"backend": "sglang", "server_urls": ["gpu1:30000"]},
        "rollout.server_urls[0]",
        "server_urls[0]='gpu1:30000' is not an http(s) URL: write it as http://HOST:PORT",
    ),
    (
        {"server_urls": ["http://a:1", "http://a:1"]},
        "rollout.server_urls",
        "server_urls lists a URL twice: list each once",
    ),
    (
        {"launch": "remote"},
        "rollout.launch",
        "launch='remote' is unknown: use external or colocated",
    ),
    (
        {"server_concurrency": 0},
        "rollout.server_concurrency",
        "server_concurrency=0 must be at least 1: e.g. 4",
    ),
    (
        {"max_retries": -1},
        "rollout.max_retries",
        "max_retries=-1 must be 0 (no retry) or more: e.g. 3",
    ),
    (
        {"request_timeout": 0.0},
        "rollout.request_timeout",
        "request_timeout=0.0 must be positive seconds: e.g. 600",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), INVALID)
def test_each_rule_names_field_and_fix(overrides, field, message):
    assert problems(**overrides) == {field: message}


# Cases at the edge of a rule that must pass.
VALID = [
    {"family": "flux", "height": 512, "width": 768, "guidance_scale": 3.5},
    {"family": "sd3", "height": 512, "width": 512, "guidance_scale": 4.5},
    {"family": "qwen-image", "height": 512, "width": 512, "true_cfg_scale": 4.0},
    {"lora_target": "full", "lora_rank": 1, "lora_alpha": 0.5},
    {"lora_target": "attn+mlp"},
    {"model.dtype": "bfloat16", "offload_text_encoders": "cpu", "gradient_checkpointing": True},
    {"model.dtype": "float16", "offload_text_encoders": "none", "gradient_checkpointing": False},
    {"model.dtype": "float16", "num_gpus": 2, "fsdp": False},
    {"model.dtype": "bfloat16", "num_gpus": 2},
    {"prompts": [], "dataset": "dataset/ocr"},
    {"rewards": [{"name": "color", "weight": 0.0}, {"name": "color_pixel", "weight": 1.0}]},
    {"rewards": [{"name": "ocr", "path": "/weights/ocr"}], "prompts": ['a sign that says "open"']},
    {"n_samples_per_prompt": 2, "diffusion_microgroup_size": 1},
    {"n_samples_per_prompt": 16, "diffusion_microgroup_size": 16},
    {"global_batch_size": 16},
    {
        "num_steps_per_rollout": 16,
        "micro_batch_size_sample": 1,
        "max_steps": 32,
        "checkpoint_every": 0,
        "eval_every": 16,
    },
    {"num_gpus": 4, "micro_batch_size_sample": 2},
    {"micro_batch_size_tstep": 2},
    {"width": 8, "height": 8},
    {"num_inference_steps": 2, "sde_window_size": 1, "sde_window_range": [0, 0]},
    {"sde_window_range": [0, 5]},
    {"sde_window_range": [5, 5]},
    {"sde_window_size": 7, "sde_window_range": [0, 0]},
    {"noise_level": 1.41},
    {"sde_type": "cps", "noise_level": 1.0},
    {"kl_beta": 0.0, "weight_decay": 0.0},
    {"seed": 0},
    {"seed": 2**31 - 1},
    {"backend": "sglang", "server_urls": ["http://gpu1:30000", "https://gpu2.example:443/"]},
    {"backend": "sglang", "launch": "colocated", "max_retries": 0},
]


@pytest.mark.parametrize("overrides", VALID)
def test_edge_cases_are_valid(overrides):
    assert problems(**overrides) == {}


def test_every_problem_is_reported_at_once():
    found = problems(
        family="sd4",
        n_samples_per_prompt=16,
        diffusion_microgroup_size=6,
        width=30,
        lr=0.0,
        rewards=[{"name": "colour"}],
        seed=-5,
    )
    assert set(found) == {
        "model.family",
        "layout.diffusion_microgroup_size",
        "optimiser.lr",
        "rewards[0].name",
        "run.seed",
    }
    # The width is not checked against an unknown family: one mistake, one message.
    assert "sampler.width" not in found


def test_a_rejected_setting_does_not_echo_downstream():
    # A group of 1 is the only problem reported, not also the microgroup or batch splits.
    assert list(problems(n_samples_per_prompt=1, diffusion_microgroup_size=3)) == [
        "layout.n_samples_per_prompt"
    ]


def test_divisors():
    assert divisors(16) == [1, 2, 4, 8, 16]
    assert divisors(1) == [1]
    assert divisors(0) == []


def test_long_fix_lists_keep_the_closest_values():
    # 48 x 24 = 1152 samples have 21 divisors; the fix lists the 8 nearest the 5 asked for.
    found = problems(
        rollout_batch_size=48,
        n_samples_per_prompt=24,
        diffusion_microgroup_size=8,
        num_steps_per_rollout=5,
        max_steps=5,
        checkpoint_every=5,
        eval_every=5,
    )
    assert found["layout.num_steps_per_rollout"].endswith("use 1, 2, 3, 4, 6, 8, 9 or 12")


class TestCheckPaths:
    def test_tiny_needs_no_paths(self, tmp_path):
        assert check_paths(Recipe(), root=tmp_path) == []

    def test_missing_model_dataset_and_reward_paths(self, tmp_path):
        recipe = apply_overrides(
            Recipe(),
            {"family": "sd3", "prompts": [], "dataset": "data", "rewards": [{"name": "ocr"}]},
        )
        found = {p.field: p.message for p in check_paths(recipe, root=tmp_path)}
        assert found == {
            "model.path": "model.path is empty but family='sd3' has no built-in weights: set it "
            "to the local diffusers directory",
            "data.dataset": f"{tmp_path / 'data'} does not exist: fix data.dataset",
            "rewards[0].path": "rewards[0].path is empty but 'ocr' loads its model from a local "
            "directory: set it",
        }

    def test_paths_that_do_not_exist(self, tmp_path):
        recipe = apply_overrides(
            Recipe(),
            {"family": "sd3", "path": "nope", "rewards": [{"name": "ocr", "path": "gone"}]},
        )
        found = {p.field: p.message for p in check_paths(recipe, root=tmp_path)}
        assert found == {
            "model.path": "model.path='nope' is not a directory: fix the path",
            "rewards[0].path": "rewards[0].path='gone' is not a directory: fix the path",
        }

    def test_present_paths_pass_relative_to_root(self, tmp_path):
        (tmp_path / "model").mkdir()
        (tmp_path / "ocr").mkdir()
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "train.txt").write_text('a sign that says "hi"\n')
        recipe = apply_overrides(
            Recipe(),
            {
                "family": "sd3",
                "path": "model",
                "prompts": [],
                "dataset": "data",
                "rewards": [{"name": "ocr", "path": str(tmp_path / "ocr")}],
            },
        )
        assert check_paths(recipe, root=tmp_path) == []


def test_ocr_names_each_inline_prompt_without_quoted_text() -> None:
    found = problems(
        rewards=[{"name": "ocr", "path": "/w"}],
        prompts=['a sign that says "open"', "a plain mug"],
        eval_prompts=["no target either"],
    )
    assert set(found) == {"data.prompts[1]", "data.eval_prompts[0]"}
    assert (
        "'a plain mug' has no text in double quotes for the ocr reward (1 of 2 prompts)"
        in (found["data.prompts[1]"])
    )


def test_check_paths_reads_the_dataset_and_its_ocr_targets(tmp_path) -> None:
    (tmp_path / "train.txt").write_text('a sign that says "open"\na plain mug\n')
    recipe = apply_overrides(
        Recipe(),
        {
            "prompts": [],
            "dataset": str(tmp_path),
            "rewards": [{"name": "ocr", "path": str(tmp_path)}],
        },
    )
    (problem,) = check_paths(recipe)
    assert problem.field == "data.dataset"
    assert "1 of 2 prompts have no text in double quotes" in problem.message
    empty = apply_overrides(recipe, {"dataset": str(tmp_path / "nothing")})
    assert [p.field for p in check_paths(empty)] == ["data.dataset"]
