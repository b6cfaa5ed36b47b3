"""The small runs the tests share: overrides of the ``tiny-color`` preset (``apply_overrides``),
each named by its shape so that tests meaning the same run say so once.

The preset itself is 4 prompts x 8 samples in microgroups of 8, 8 denoising steps at 32x32: too
slow for most tests. A test whose run differs writes the difference out after the shared part,
``{**TINY_COLOR_SMALL, "max_steps": 4}``, so the values it runs with stay in view.
"""

from __future__ import annotations

from typing import Any

#: Groups of G=4 samples, each generated as one microgroup (M=4) and trained in one 4-sample tile.
GROUPS_OF_FOUR: dict[str, Any] = {
    "n_samples_per_prompt": 4,
    "diffusion_microgroup_size": 4,
    "micro_batch_size_sample": 4,
}
#: Groups of G=2 samples, each generated as one microgroup (M=2) and trained in one 2-sample tile.
GROUPS_OF_TWO: dict[str, Any] = {
    "n_samples_per_prompt": 2,
    "diffusion_microgroup_size": 2,
    "micro_batch_size_sample": 2,
}

#: P=2 prompts in groups of four: an 8-sample rollout.
TINY_COLOR_SMALL: dict[str, Any] = {"rollout_batch_size": 2, **GROUPS_OF_FOUR}

#: The quickest whole run that still trains: 1 prompt x 2 samples, 2 optimizer steps, no
#: evaluation and one checkpoint (at the end).
TINY_COLOR_QUICK: dict[str, Any] = {
    "rollout_batch_size": 1,
    **GROUPS_OF_TWO,
    "max_steps": 2,
    "eval_every": 0,
    "checkpoint_every": 0,
}

#: For two data-parallel ranks: P=2 x G=4, two optimizer steps of 4 samples a rollout, so 2
#: samples per rank per step, in 2-sample x 1-step tiles; 4 denoising steps keep the rollout
#: short; an evaluation and a checkpoint every 2 steps.
TINY_COLOR_TWO_RANKS: dict[str, Any] = {
    "rollout_batch_size": 2,
    "n_samples_per_prompt": 4,
    "diffusion_microgroup_size": 4,
    "num_steps_per_rollout": 2,
    "micro_batch_size_sample": 2,
    "micro_batch_size_tstep": 1,
    "num_inference_steps": 4,
    "eval_every": 2,
    "checkpoint_every": 2,
}
