"""The policy's precision and memory mechanics on the tiny model: float32 master weights beside
frozen weights in the model dtype, the reference policy, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from engine.models.loading import load_model
from engine.overrides import apply_overrides
from engine.policy import Policy
from engine.presets import PRESETS
from engine.recipe import ModelConfig
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import rollout_requests
from engine.trainer import Trainer
from tests.recipes import TINY_COLOR_SMALL


def test_lora_adapters_are_float32_beside_a_frozen_bfloat16_base() -> None:
    model = load_model("tiny", None, dtype=torch.bfloat16)
    policy = Policy(model, ModelConfig(lora_target="attn"), keep_reference=True, seed=0)
    named = dict(model.transformer.named_parameters())
    adapters = {n for n in named if ".lora_" in n}
    # Two blocks of 8 attention projections (q, k, v, out of the image and the text stream),
    # less the last block's text output (SD3's last block is context_pre_only): 15, A and B each.
    assert len(adapters) == (8 + 7) * 2
    for name, param in named.items():
        expected = (torch.float32, True) if name in adapters else (torch.bfloat16, False)
        assert (param.dtype, param.requires_grad) == expected, name
    assert {id(p) for p in policy.parameters} == {id(named[n]) for n in adapters}
    # The reference is the same module with its adapters off, never a second copy.
    assert policy.reference_module is None


def test_a_full_fine_tune_trains_float32_masters_against_a_model_dtype_reference() -> None:
    model = load_model("tiny", None, dtype=torch.bfloat16)
    loaded = {n: p.detach().clone() for n, p in model.transformer.named_parameters()}
    policy = Policy(model, ModelConfig(lora_target="full"), keep_reference=True, seed=0)
    transformer, reference = model.transformer, policy.reference_module
    assert reference is not None
    for name, param in transformer.named_parameters():
        assert param.dtype == torch.float32 and param.requires_grad, name
        # bf16 -> float32 is exact: the masters start from the loaded weights themselves.
        assert torch.equal(param.to(torch.bfloat16), loaded[name]), name
    for name, param in reference.named_parameters():
        assert param.dtype == torch.bfloat16 and not param.requires_grad, name
        assert torch.equal(param, loaded[name]), name
    # Buffers are no weights: they stay as loaded.
    assert transformer.pos_embed.pos_embed.dtype == torch.bfloat16  # type: ignore[union-attr]


def test_a_float32_model_keeps_its_very_parameters() -> None:
    # The CPU demo's default: nothing is cast, so every number stays as it always was.
    model = load_model("tiny", None)
    before = {n: p for n, p in model.transformer.named_parameters()}
    values = {n: p.detach().clone() for n, p in before.items()}
    Policy(model, ModelConfig(lora_target="full"), keep_reference=False, seed=0)
    for name, param in model.transformer.named_parameters():
        assert param is before[name] and torch.equal(param, values[name]), name


def _train(dtype: str, checkpointing: bool, target: str = "full"):
    """One rollout of 2 prompts x 4 samples and its update: (metrics, gradients, forwards of
    the first DiT block while training)."""
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            **TINY_COLOR_SMALL,
            "lora_target": target,
            "kl_beta": 0.01,
            "model.dtype": dtype,
            "gradient_checkpointing": checkpointing,
        },
    )
    model = load_model("tiny", None, dtype=getattr(torch, dtype))
    policy = Policy(
        model, recipe.model, keep_reference=True, seed=0, gradient_checkpointing=checkpointing
    )
    trainer = Trainer(policy, recipe)
    backend = InProcessBackend(model)
    prompts = list(recipe.data.prompts[:2])
    results = [backend.generate(r) for r in rollout_requests(recipe, prompts, 0)]
    conditionings = [
        model.encode_prompts([r.request.prompt]).repeat(r.request.num_outputs) for r in results
    ]
    advantages = [torch.linspace(-1, 1, len(r.samples)) for r in results]
    calls: list[bool] = []
    block = model.transformer.transformer_blocks[0]  # type: ignore[index]
    # A pre-hook: a checkpoint's recompute stops once it has what the backward needs, before
    # the block's end (and its forward hooks).
    block.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    _replay, metrics = trainer.train_rollout(results, conditionings, advantages)
    grads = {n: p.grad.clone() for n, p in model.transformer.named_parameters() if p.requires_grad}
    return metrics, grads, calls


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("target", ["full", "attn"])
def test_checkpointing_gives_the_same_loss_and_gradients(dtype: str, target: str) -> None:
    plain, plain_grads, plain_calls = _train(dtype, False, target)
    checkpointed, grads, calls = _train(dtype, True, target)
    # The recompute runs the very same kernels on the very same inputs: equal up to the order
    # autograd sums a few terms in (a few float32 ulps; bf16 rounds both runs alike).
    for mine, reference in zip(checkpointed, plain, strict=True):
        assert mine.loss == pytest.approx(reference.loss, rel=1e-6, abs=1e-12)
        assert mine.grad_norm == pytest.approx(reference.grad_norm, rel=1e-5)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-9)
    # 8 samples in 4-sample tiles x a window of 2 steps: 4 tiles. Without checkpointing the
    # block runs 4 times for the replay (no grad) and 4 to train, and, with LoRA, 4 more for the
    # KL's reference (adapters off, no grad; a full fine-tune's reference is another module).
    # With checkpointing each training forward runs again in the backward, and no other does.
    no_grad = 8 if target == "attn" else 4
    assert plain_calls.count(True) == 4 and plain_calls.count(False) == no_grad
    assert calls.count(True) == 8 and calls.count(False) == no_grad


def test_checkpointing_keeps_fewer_activations_for_the_backward() -> None:
    def saved_bytes(checkpointing: bool) -> int:
        model = load_model("tiny", None)
        Policy(
            model,
            ModelConfig(lora_target="full"),
            keep_reference=False,
            seed=0,
            gradient_checkpointing=checkpointing,
        )
        latents = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        conditioning = model.encode_prompts(["a red image"]).repeat(4)
        total = 0
        # Weights are saved by reference (a linear saves its weight), no activation memory:
        # they count as seen.
        seen = {p.untyped_storage().data_ptr() for p in model.transformer.parameters()}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            storage = tensor.untyped_storage()
            # Each buffer once: several ops save the same activation, or views of it.
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
            return tensor

        # Non-reentrant checkpointing stores its own placeholders for what a block saves, so
        # this outer hook sees only what is kept until the backward.
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model.velocity(latents, torch.full((4,), 0.5), conditioning)
        out.square().mean().backward()
        return total

    plain, checkpointed = saved_bytes(False), saved_bytes(True)
    # What the DiT's 2 blocks saved is recomputed instead (the checkpoints hold the blocks'
    # inputs, which this hook does not see): what stays saved is well under half.
    assert 0 < checkpointed < plain / 2
