"""The GRPO update on the tiny model: the clipped loss by hand, exact replay, KL at the start."""

from __future__ import annotations

import math

import pytest
import torch

from engine.models.loading import load_model
from engine.models.precision import resolved_dtype
from engine.overrides import apply_overrides
from engine.policy import Policy
from engine.presets import PRESETS
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import rollout_requests
from engine.trainer import Trainer, clipped_surrogate
from tests.recipes import GROUPS_OF_FOUR


def test_clipped_surrogate_by_hand() -> None:
    # clip_range 0.2. Element 1: r = e^0.1 = 1.10517 inside the clip, A = 2 -> -2r = -2.21034.
    # Element 2: r = e^0.5 = 1.64872 > 1.2, A = 1: max(-1.64872, -1.2) = -1.2 (clipped).
    # Element 3: r = e^0.5, A = -1: max(1.64872, 1.2) = 1.64872 (the pessimistic, unclipped one).
    # Element 4: r = e^-0.5 = 0.60653 < 0.8, A = -1: max(0.60653, 0.8) = 0.8.
    log_probs = torch.tensor([0.1, 0.5, 0.5, -0.5])
    advantages = torch.tensor([2.0, 1.0, -1.0, -1.0])
    terms, ratio = clipped_surrogate(log_probs, torch.zeros(4), advantages, 0.2)
    expected = torch.tensor([-2 * math.exp(0.1), -1.2, math.exp(0.5), 0.8])
    torch.testing.assert_close(terms, expected)
    torch.testing.assert_close(ratio, torch.exp(log_probs))


def _rollout(overrides: dict[str, object]):
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, {**GROUPS_OF_FOUR, **overrides})
    model = load_model("tiny", None, dtype=resolved_dtype(recipe, "cpu"))
    policy = Policy(
        model, recipe.model, keep_reference=recipe.optimiser.kl_beta > 0, seed=recipe.run.seed
    )
    trainer = Trainer(policy, recipe)
    prompts = list(recipe.data.prompts[: recipe.layout.rollout_batch_size])
    backend = InProcessBackend(model)
    results = [backend.generate(r) for r in rollout_requests(recipe, prompts, 0)]
    conditionings = [
        model.encode_prompts([r.request.prompt]).repeat(r.request.num_outputs) for r in results
    ]
    advantages = [torch.linspace(-1, 1, len(r.samples)) for r in results]
    return trainer, results, conditionings, advantages


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("target", ["full", "attn"])
def test_first_update_replays_the_rollout_exactly(target: str, dtype: str) -> None:
    # In bf16 too: the rollout and the replay run the same autocast forward on the same batches
    # and the SDE's log-probs are float32 of the same bf16 samples.
    trainer, results, conditionings, advantages = _rollout(
        {
            "model.dtype": dtype,
            "lora_target": target,
            "rollout_batch_size": 2,
            "num_steps_per_rollout": 2,
            "max_steps": 4,
            "eval_every": 2,
            "checkpoint_every": 2,
        }
    )
    replay, metrics = trainer.train_rollout(results, conditionings, advantages)
    assert replay.finite
    assert replay.max_ratio_deviation < 1e-5
    first = metrics[0]
    assert abs(first.ratio_min - 1) < 1e-5 and abs(first.ratio_max - 1) < 1e-5
    assert first.clip_fraction == 0.0
    assert math.isfinite(first.grad_norm) and first.grad_norm > 0
    assert len(metrics) == 2


def test_kl_is_zero_while_the_adapters_add_nothing() -> None:
    # LoRA's B matrices start at zero: the policy equals its reference on the first step.
    trainer, results, conditionings, advantages = _rollout(
        {"lora_target": "attn", "kl_beta": 0.1, "rollout_batch_size": 1}
    )
    _replay, (first,) = trainer.train_rollout(results, conditionings, advantages)
    assert first.kl == pytest.approx(0.0, abs=1e-12)
    assert first.loss == pytest.approx(first.policy_loss)


def test_a_tile_smaller_than_the_microgroup_reports_its_replay_deviation() -> None:
    trainer, results, conditionings, advantages = _rollout(
        {"rollout_batch_size": 1, "micro_batch_size_sample": 1}
    )
    replay, _metrics = trainer.train_rollout(results, conditionings, advantages)
    assert replay.finite and replay.max_ratio_deviation < 1e-3


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("target", ["full", "attn"])
def test_updates_keep_float32_master_weights_and_adamw_state(target: str, dtype: str) -> None:
    trainer, results, conditionings, advantages = _rollout(
        {"model.dtype": dtype, "lora_target": target, "rollout_batch_size": 1}
    )
    params = trainer.policy.parameters
    before = [p.detach().clone() for p in params]
    trainer.train_rollout(results, conditionings, advantages)
    assert all(p.dtype == torch.float32 for p in params)
    # lr 1e-3: Adam's first step moves a weight by up to ~lr, kept whole in float32 (a bf16
    # weight of size 1 could only move in steps of 2^-8 = 4e-3).
    moved = [(p - b).abs().max().item() for p, b in zip(params, before, strict=True)]
    assert max(moved) > 1e-4
    state = trainer.optimizer.state_dict()
    moments = [entry[key] for entry in state["state"].values() for key in ("exp_avg", "exp_avg_sq")]
    assert len(moments) == 2 * len(params)
    assert {m.dtype for m in moments} == {torch.float32}
    frozen = {p.dtype for p in trainer.policy.model.transformer.parameters() if not p.requires_grad}
    assert frozen == (set() if target == "full" else {getattr(torch, dtype)})
    # float16 scales the loss (its range would flush small gradients), and the scale rides in
    # the optimizer's state dict, so a checkpoint and a resume carry it.
    assert ("grad_scaler" in state) == (dtype == "float16")


def test_a_resumed_optimizer_continues_the_float16_loss_scale() -> None:
    trainer, results, conditionings, advantages = _rollout(
        {"model.dtype": "float16", "rollout_batch_size": 1}
    )
    trainer.train_rollout(results, conditionings, advantages)
    # A scale unlike the 65536 a fresh scaler starts at, to see it travel.
    trainer.scaler.update(1024.0)
    saved = trainer.optimizer.state_dict()
    fresh, *_ = _rollout({"model.dtype": "float16", "rollout_batch_size": 1})
    fresh.optimizer.load_state_dict(saved)
    assert fresh.scaler.get_scale() == 1024.0
    assert fresh.optimizer.state_dict()["grad_scaler"] == saved["grad_scaler"]
