"""How empty precision and memory settings resolve, per family and device."""

import pytest
import torch

from engine.models.precision import (
    dtype_name,
    resolved_checkpointing,
    resolved_dtype,
    resolved_offload,
)
from engine.overrides import apply_overrides
from engine.recipe import Recipe


def recipe(**overrides):
    return apply_overrides(Recipe(), overrides)


@pytest.mark.parametrize(
    ("family", "device", "expected"),
    [
        # Real families default to bf16 on a GPU only; the CPU and the tiny model keep float32.
        ("qwen-image", "cuda", torch.bfloat16),
        ("sd3", "cuda", torch.bfloat16),
        ("flux", "cuda", torch.bfloat16),
        ("qwen-image", "cpu", torch.float32),
        ("tiny", "cuda", torch.float32),
        ("tiny", "cpu", torch.float32),
    ],
)
def test_an_empty_dtype_follows_the_family_and_device(family, device, expected):
    assert resolved_dtype(recipe(family=family), device) == expected


def test_a_set_dtype_wins_everywhere():
    assert resolved_dtype(recipe(**{"model.dtype": "bfloat16"}), "cpu") == torch.bfloat16
    assert resolved_dtype(recipe(**{"model.dtype": "float16"}), "cuda") == torch.float16
    chosen = recipe(family="sd3", **{"model.dtype": "float32"})
    assert resolved_dtype(chosen, "cuda") == torch.float32


def test_an_unknown_dtype_names_the_setting():
    with pytest.raises(ValueError, match=r"model\.dtype='bf16' is unknown"):
        resolved_dtype(recipe(**{"model.dtype": "bf16"}), "cpu")


def test_offload_defaults_to_cpu_for_qwen_image_only():
    assert resolved_offload(recipe(family="qwen-image")) == "cpu"
    assert resolved_offload(recipe(family="sd3")) == "none"
    assert resolved_offload(recipe(family="tiny")) == "none"
    assert resolved_offload(recipe(family="qwen-image", offload_text_encoders="none")) == "none"
    assert resolved_offload(recipe(family="flux", offload_text_encoders="cpu")) == "cpu"


def test_checkpointing_defaults_to_on_for_real_families():
    assert resolved_checkpointing(recipe(family="flux")) is True
    assert resolved_checkpointing(recipe(family="tiny")) is False
    assert resolved_checkpointing(recipe(family="tiny", gradient_checkpointing=True)) is True
    assert resolved_checkpointing(recipe(family="sd3", gradient_checkpointing=False)) is False


def test_dtype_names_round_trip():
    assert dtype_name(torch.bfloat16) == "bfloat16"
    assert resolved_dtype(recipe(**{"model.dtype": dtype_name(torch.float16)}), "cpu") == (
        torch.float16
    )
    with pytest.raises(ValueError, match="not a model dtype"):
        dtype_name(torch.int8)
