"""Named recipes as data. docs/recipes.md gives the source of every value."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from engine.recipe import Recipe


@dataclass(frozen=True)
class Preset:
    """A named recipe with a one-line description and where its values come from."""

    name: str
    description: str
    source: str
    recipe: Recipe


# Measured on 2 CPU cores (docs/performance.md, bench/learning.py): groups of 8, the whole
# 288k-weight DiT trained (adapters learn too slowly at this size), the SDE window on the first
# two (high-noise) steps, noise 1.0 for exploration, global reward std (per-group std learned
# faster here but destabilised converged groups, whose tiny std magnifies noise). 200 steps: the
# mean reward passes 0.8 with every prompt on its colour near step 170; trained on past ~200 with
# nothing but reward noise left to follow, it collapsed (see docs/performance.md).
_TINY_COLOR: dict[str, Any] = {
    "model": {
        "family": "tiny",
        "path": None,
        "lora_rank": 8,
        "lora_alpha": 16.0,
        "lora_target": "full",
    },
    "data": {
        "dataset": None,
        "prompts": ["a red image", "a green image", "a blue image", "a yellow image"],
        "eval_prompts": [],
    },
    "rewards": [{"name": "color", "weight": 1.0}],
    "layout": {
        "rollout_batch_size": 4,
        "n_samples_per_prompt": 8,
        "diffusion_microgroup_size": 8,
        "num_steps_per_rollout": 1,
        "global_batch_size": None,
        "num_gpus": 1,
        "micro_batch_size_sample": 8,
        "micro_batch_size_tstep": 1,
    },
    "sampler": {
        "height": 32,
        "width": 32,
        "num_inference_steps": 8,
        "eval_num_inference_steps": 8,
        "guidance_scale": 1.0,
        "true_cfg_scale": 1.0,
        "sde_type": "sde",
        "noise_level": 1.0,
        "sde_window_size": 2,
        "sde_window_range": [0, 0],
    },
    "optimiser": {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "clip_range": 1e-4,
        "adv_clip_max": 5.0,
        "kl_beta": 0.0,
        "globalize_reward_std": True,
        "max_grad_norm": 1.0,
    },
    "run": {"seed": 42, "max_steps": 200, "checkpoint_every": 50, "eval_every": 25},
}

# Qwen-Image with Flow-GRPO, as published: 512 px, 10 training / 50 evaluation steps, true CFG 4,
# noise 1.2 on a window of 2 steps starting in 0..4, LoRA r=64 alpha=128 on attention and MLPs.
_QWEN_IMAGE: dict[str, Any] = {
    "model": {
        "family": "qwen-image",
        "path": None,
        "lora_rank": 64,
        "lora_alpha": 128.0,
        "lora_target": "attn+mlp",
    },
    "layout": {
        "n_samples_per_prompt": 16,
        "diffusion_microgroup_size": 16,
        "num_steps_per_rollout": 2,
        "global_batch_size": None,
        "micro_batch_size_sample": 4,
        "micro_batch_size_tstep": 1,
    },
    "sampler": {
        "height": 512,
        "width": 512,
        "num_inference_steps": 10,
        "eval_num_inference_steps": 50,
        "guidance_scale": 1.0,
        "true_cfg_scale": 4.0,
        "sde_type": "sde",
        "noise_level": 1.2,
        "sde_window_size": 2,
        "sde_window_range": [0, 4],
    },
    "optimiser": {
        "lr": 3e-4,
        "weight_decay": 1e-4,
        "clip_range": 1e-4,
        "adv_clip_max": 5.0,
        "kl_beta": 0.0,
        "globalize_reward_std": True,
        "max_grad_norm": 1.0,
    },
    "run": {"seed": 42, "max_steps": 600, "checkpoint_every": 60, "eval_every": 60},
}

# SD3.5 Medium with Flow-GRPO, as in the paper and config/grpo.py: 512 px, 10 / 40 steps, CFG 4.5,
# noise 0.7 on every step but the last, G=24 and 48 prompts per rollout, LoRA r=32 alpha=64.
_SD35: dict[str, Any] = {
    "model": {
        "family": "sd3",
        "path": None,
        "lora_rank": 32,
        "lora_alpha": 64.0,
        "lora_target": "attn",
    },
    "layout": {
        "rollout_batch_size": 48,
        "n_samples_per_prompt": 24,
        "diffusion_microgroup_size": 8,
        "num_steps_per_rollout": 2,
        "global_batch_size": None,
        "num_gpus": 8,
        "micro_batch_size_sample": 9,
        "micro_batch_size_tstep": 1,
    },
    "sampler": {
        "height": 512,
        "width": 512,
        "num_inference_steps": 10,
        "eval_num_inference_steps": 40,
        "guidance_scale": 4.5,
        "true_cfg_scale": 1.0,
        "sde_type": "sde",
        "noise_level": 0.7,
        "sde_window_size": 9,
        "sde_window_range": [0, 0],
    },
    "optimiser": {
        "lr": 3e-4,
        "weight_decay": 1e-4,
        "clip_range": 1e-4,
        "adv_clip_max": 5.0,
        "globalize_reward_std": True,
        "max_grad_norm": 1.0,
    },
    "run": {"seed": 42, "max_steps": 1200, "checkpoint_every": 120, "eval_every": 120},
}

_OCR = {"data": {"dataset": "dataset/ocr", "prompts": []}, "rewards": [{"name": "ocr"}]}
_PICKSCORE = {
    "data": {"dataset": "dataset/pickscore", "prompts": []},
    "rewards": [{"name": "pickscore"}],
}


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge recipe dicts section by section; later parts win."""
    merged: dict[str, Any] = {}
    for part in parts:
        for section, value in part.items():
            if isinstance(value, dict):
                merged[section] = {**merged.get(section, {}), **value}
            else:
                merged[section] = value
    return merged


def _qwen(gpus: int, prompts: int, microgroup: int | None = None) -> dict[str, Any]:
    layout = {"num_gpus": gpus, "rollout_batch_size": prompts}
    if microgroup is not None:
        layout["diffusion_microgroup_size"] = microgroup
    return _merge(_QWEN_IMAGE, {"layout": layout})


_QWEN_SOURCE = (
    "Flow-GRPO Qwen-Image recipe (arXiv:2505.05470; config/grpo.py pickscore_qwenimage), "
    "rescaled to the GPU count"
)
_SD35_SOURCE = "Flow-GRPO paper (arXiv:2505.05470) and config/grpo.py"

_PRESETS = (
    Preset(
        "tiny-color",
        "The CPU demo: a tiny built-in model learns to paint the colour its prompt names.",
        "Groupwise (sized to train in minutes on a CPU)",
        Recipe.from_dict(_TINY_COLOR),
    ),
    Preset(
        "ocr-qwen-image-2gpu",
        "Qwen-Image learns to render the quoted text (OCR reward), 2 GPUs.",
        _QWEN_SOURCE,
        Recipe.from_dict(_merge(_qwen(gpus=2, prompts=16), _OCR)),
    ),
    Preset(
        "ocr-qwen-image-4gpu",
        "Qwen-Image learns to render the quoted text (OCR reward), 4 GPUs.",
        _QWEN_SOURCE,
        Recipe.from_dict(_merge(_qwen(gpus=4, prompts=32), _OCR)),
    ),
    Preset(
        "pickscore-qwen-image-2gpu",
        "Qwen-Image tuned towards human preference (PickScore), 2 GPUs.",
        _QWEN_SOURCE,
        Recipe.from_dict(_merge(_qwen(gpus=2, prompts=16), _PICKSCORE)),
    ),
    Preset(
        "pickscore-qwen-image-4gpu",
        "Qwen-Image tuned towards human preference (PickScore), 4 GPUs.",
        _QWEN_SOURCE,
        Recipe.from_dict(_merge(_qwen(gpus=4, prompts=32, microgroup=8), _PICKSCORE)),
    ),
    Preset(
        "ocr-sd35",
        "SD3.5 Medium learns to render the quoted text (OCR reward), as in the Flow-GRPO paper.",
        _SD35_SOURCE + " general_ocr_sd3",
        Recipe.from_dict(_merge(_SD35, _OCR, {"optimiser": {"kl_beta": 0.04}})),
    ),
    Preset(
        "pickscore-sd35",
        "SD3.5 Medium tuned towards human preference (PickScore), as in the Flow-GRPO paper.",
        _SD35_SOURCE + " pickscore_sd3",
        Recipe.from_dict(_merge(_SD35, _PICKSCORE, {"optimiser": {"kl_beta": 0.01}})),
    ),
)

#: Every preset by name, read-only.
PRESETS: MappingProxyType[str, Preset] = MappingProxyType({p.name: p for p in _PRESETS})


def preset(name: str) -> Recipe:
    """The recipe of preset ``name``; raises ``KeyError`` naming the presets."""
    try:
        return PRESETS[name].recipe
    except KeyError:
        raise KeyError(f"no preset named '{name}': use one of {', '.join(PRESETS)}") from None
