"""What a recipe's precision and memory settings mean once resolved.

``model.dtype``, ``model.offload_text_encoders`` and ``layout.gradient_checkpointing`` may be
left empty; these functions say what a run then uses, and everything that acts on the settings
(loading, the trainer, the memory plan, the rollout servers) asks them rather than reading the
fields. Real families default to what fits their GPUs (bfloat16, checkpointing on, Qwen-Image's
7 B text encoder off the GPU between rollouts); the tiny model and every CPU run keep float32 and
no checkpointing, the CPU demo's exact behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.recipe import Recipe

if TYPE_CHECKING:
    import torch

#: ``model.dtype``'s names, each the name of a torch dtype (``torch.bfloat16``). Names only: the
#: validator and the web server read them, and neither loads torch; the functions below that
#: return a torch dtype import it when called.
DTYPES = ("bfloat16", "float16", "float32")
#: ``model.offload_text_encoders``'s values: ``cpu`` parks the encoders in host memory once a
#: rollout's prompts are encoded, ``none`` keeps them on the model's device.
OFFLOADS = ("cpu", "none")


def resolved_dtype(recipe: Recipe, device_type: str) -> torch.dtype:
    """The dtype frozen weights are stored and the DiT computes in, on a ``device_type``
    (``torch.device.type``: ``cuda``, ``cpu``) device.

    Empty means bfloat16 for a real family on CUDA (its weights are published in bf16 and a
    float32 Qwen-Image transformer alone is 82 GB) and float32 otherwise: the CPU has no fast
    bf16 matmul and the tiny model's tests pin float32 numbers. Raises ``ValueError`` for a
    name ``validate`` would have refused.
    """
    return dtype_for(recipe.model.dtype, recipe.model.family, device_type)


def dtype_for(name: str | None, family: str, device_type: str) -> torch.dtype:
    """``resolved_dtype`` from its parts, for what serves a model without a recipe (the
    compatible rollout server's ``--dtype``)."""
    import torch

    if name is None:
        real_gpu = family != "tiny" and device_type == "cuda"
        return torch.bfloat16 if real_gpu else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r} is unknown: use {', '.join(DTYPES)}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def resolved_offload(recipe: Recipe) -> str:
    """``cpu`` or ``none``: where the text encoders wait while the DiT trains."""
    offload = recipe.model.offload_text_encoders
    if offload is None:
        return "cpu" if recipe.model.family == "qwen-image" else "none"
    return offload


def resolved_checkpointing(recipe: Recipe) -> bool:
    """Whether training forwards checkpoint every DiT block's activations."""
    checkpointing = recipe.layout.gradient_checkpointing
    if checkpointing is None:
        return recipe.model.family != "tiny"
    return checkpointing


def dtype_name(dtype: torch.dtype) -> str:
    """The ``model.dtype`` name of a torch dtype (``torch.bfloat16`` -> ``bfloat16``)."""
    name = str(dtype).removeprefix("torch.")
    if name in DTYPES:
        return name
    raise ValueError(f"{dtype} is not a model dtype: use one of {', '.join(DTYPES)}")
