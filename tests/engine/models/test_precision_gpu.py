"""The precision and memory mechanics on a CUDA device, where they matter: skipped without one."""

from __future__ import annotations

import pytest
import torch

from engine.models.loading import load_model
from engine.overrides import apply_overrides
from engine.policy import Policy
from engine.presets import PRESETS
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import rollout_requests
from engine.trainer import Trainer
from tests.recipes import TINY_COLOR_SMALL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_offloaded_text_encoders_free_the_gpu_and_come_back_for_the_next_prompt() -> None:
    model = load_model("tiny", None, device="cuda", dtype=torch.bfloat16)
    (encoder,) = model.text_encoders()
    first = model.encode_prompts(["a red image"])
    on_gpu = torch.cuda.memory_allocated()
    encoder_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    model.offload_text_encoders()
    assert {p.device.type for p in encoder.parameters()} == {"cpu"}
    assert on_gpu - torch.cuda.memory_allocated() >= encoder_bytes
    again = model.encode_prompts(["a red image"])
    assert {p.device for p in encoder.parameters()} == {model.device}
    for key, value in first.positive.items():
        assert torch.equal(again.positive[key], value), key


@pytest.mark.parametrize("target", ["full", "attn"])
def test_the_first_bf16_update_on_a_gpu_replays_the_rollout(target: str) -> None:
    # CUDA may pick other kernels with gradients on than off; the replay check must still pass.
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            **TINY_COLOR_SMALL,
            "model.dtype": "bfloat16",
            "lora_target": target,
            "gradient_checkpointing": True,
        },
    )
    model = load_model("tiny", None, device="cuda", dtype=torch.bfloat16)
    policy = Policy(model, recipe.model, keep_reference=False, seed=0, gradient_checkpointing=True)
    trainer = Trainer(policy, recipe)
    backend = InProcessBackend(model)
    results = [
        backend.generate(r) for r in rollout_requests(recipe, list(recipe.data.prompts[:2]), 0)
    ]
    conditionings = [
        model.encode_prompts([r.request.prompt]).repeat(r.request.num_outputs) for r in results
    ]
    advantages = [torch.linspace(-1, 1, 4, device="cuda") for _ in results]
    replay, (first,) = trainer.train_rollout(results, conditionings, advantages)
    assert replay.finite and replay.max_ratio_deviation < 1e-5
    assert abs(first.ratio_min - 1) < 1e-5 and abs(first.ratio_max - 1) < 1e-5
    assert all(p.dtype == torch.float32 for p in policy.parameters)
