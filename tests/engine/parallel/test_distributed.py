"""Data-parallel training: two gloo ranks on CPU take the step one process takes.

The 2-rank group runs once per module (``two_ranks``); each rank builds the tiny model and the
same rollout from the same seeds, trains on its half of every optimizer step and returns what it
ended with, once with whole replicas and once with the transformer sharded by FSDP. The
single-process run trains the same recipe with num_gpus=1.
"""

from __future__ import annotations

import re
import time
from typing import Any, NamedTuple

import pytest
import torch
from torch.distributed.tensor import DTensor

from engine.models.loading import load_model
from engine.overrides import apply_overrides
from engine.parallel.distributed import (
    DistContext,
    all_gather_objects,
    average_gradients,
    backend_for,
    context_from_env,
    rank_zero_only,
    reduce_floats,
    shard,
)
from engine.parallel.fsdp import full_state, load_full_state, shard_policy
from engine.policy import Policy
from engine.presets import PRESETS
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import rollout_requests
from engine.trainer import Replay, StepMetrics, Trainer
from tests.engine.parallel.launch import RankFailed, launch
from tests.engine.run.distributed_targets import fail_on_rank_one, stuck
from tests.recipes import TINY_COLOR_TWO_RANKS

# P=2 prompts x G=4 samples, 2 optimizer steps of 4 samples: 2 samples per rank per step, in one
# 2-sample x 1-step tile per step of the window of 2, so each rank accumulates 2 tiles per step
# (one process 4). The gradient norms (~2e-3) exceed max_grad_norm, so the step clips, by the
# norm of the global gradient.
SMALL = {**TINY_COLOR_TWO_RANKS, "max_grad_norm": 1e-3, "max_steps": 4}
# Both also train the KL term (non-zero on the second step): the full fine-tune against its frozen
# copy, LoRA on attention against the transformer with its adapters disabled.
TARGETS = {
    "full": {"lora_target": "full", "kl_beta": 0.01},
    "attn": {"lora_target": "attn", "kl_beta": 0.01},
}
# Both runs compute every tile bit for bit alike (same tiles, same CPU kernels); only the order in
# which the tiles' gradients are summed differs ((g1 + g2) + (g3 + g4) against ((g1 + g2) + g3) +
# g4), a few fp32 ulps (1.2e-7 relative) of the gradient. Adam's step divides by sqrt(v), so a
# few ulps of gradient stay a few ulps of a weight of size ~1: 1e-6 is a tight bound for fp32.
ATOL, RTOL = 1e-6, 1e-5


class Update(NamedTuple):
    """What one process ended a rollout's training with."""

    weights: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    replay: Replay
    metrics: list[StepMetrics]
    #: ``engine.parallel.fsdp.full_state``'s optimizer state (whole, on the CPU).
    optimizer: dict[str, Any]
    #: Whether the transformer was sharded.
    fsdp: bool
    #: ``full_state`` again after loading it into a fresh (sharded, under FSDP) policy.
    reloaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None


def _full(value: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered when FSDP holds it as a sharded DTensor; on the CPU."""
    full = getattr(value, "full_tensor", None)
    return (full() if full is not None else value).detach().cpu().clone()


def _policy(
    target: str, context: DistContext | None, device: str, fsdp: bool, dtype: str = "float32"
) -> tuple[Policy, Trainer, DistContext | None]:
    world = 1 if context is None else context.world_size
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {**SMALL, **TARGETS[target], "num_gpus": world, "model.dtype": dtype},
    )
    model = load_model("tiny", None, device=device, dtype=getattr(torch, dtype))
    policy = Policy(
        model, recipe.model, keep_reference=recipe.optimiser.kl_beta > 0, seed=recipe.run.seed
    )
    if context is not None and fsdp:
        context = shard_policy(policy, context)
    return policy, Trainer(policy, recipe, context), context


def train_once(
    target: str,
    context: DistContext | None,
    device: str = "cpu",
    fsdp: bool = False,
    dtype: str = "float32",
) -> Update:
    """The tiny model trained on one rollout, in this process or as one rank of ``context``
    (its transformer sharded by FSDP when ``fsdp``), in ``dtype``."""
    policy, trainer, context = _policy(target, context, device, fsdp, dtype)
    recipe, model = trainer.recipe, policy.model
    prompts = list(recipe.data.prompts[: recipe.layout.rollout_batch_size])
    backend = InProcessBackend(model)
    results = [backend.generate(r) for r in rollout_requests(recipe, prompts, 0)]
    conditionings = [
        model.encode_prompts([r.request.prompt]).repeat(r.request.num_outputs) for r in results
    ]
    # Every sample its own advantage: rank 0's half of a group is pushed down, rank 1's up.
    advantages = [torch.linspace(-1, 1, len(r.samples), device=device) for r in results]
    replay, metrics = trainer.train_rollout(results, conditionings, advantages)
    transformer = policy.model.transformer
    weights, optimizer = full_state(policy, trainer.optimizer)
    reloaded = None
    if context is not None and context.fsdp:
        fresh, fresh_trainer, _context = _policy(target, context, device, fsdp, dtype)
        load_full_state(fresh, fresh_trainer.optimizer, weights, optimizer)
        reloaded = full_state(fresh, fresh_trainer.optimizer)
    return Update(
        weights={name: _full(value) for name, value in policy.state_dict().items()},
        grads={
            name: _full(param.grad)
            for name, param in transformer.named_parameters()
            if param.grad is not None
        },
        replay=replay,
        metrics=metrics,
        optimizer=optimizer,
        fsdp=context is not None and context.fsdp,
        reloaded=reloaded,
    )


def _collectives(context: DistContext) -> dict[str, Any]:
    """The all-reduces on numbers worked out by hand: rank r holds r + 1 and 10 (r + 1)."""
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([1.0, 10.0]) * (context.rank + 1)
    untouched = torch.nn.Parameter(torch.zeros(1))
    average_gradients([param, untouched], context)
    value = float(context.rank + 1)
    return {
        "gathered": all_gather_objects(
            {"rank": context.rank, "ones": torch.ones(context.rank + 1)}, context
        ),
        "grad": param.grad.clone(),
        "untouched": untouched.grad,
        "sum": reduce_floats([value, 2 * value], "sum", context),
        "min": reduce_floats([value], "min", context),
        "max": reduce_floats([value], "max", context),
    }


def _rank(context: DistContext) -> dict[str, Any]:
    """Everything a rank of the module's group reports."""
    return {
        "context": context,
        "collectives": _collectives(context),
        **{
            (target, fsdp): train_once(target, context, fsdp=fsdp)
            for target in TARGETS
            for fsdp in (False, True)
        },
    }


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return launch(2, _rank, timeout=300)


def test_shard_by_hand() -> None:
    items = list(range(8))
    assert shard(items, 0, 2) == [0, 1, 2, 3]
    assert shard(items, 1, 2) == [4, 5, 6, 7]
    assert [shard(items, r, 4) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="8 samples do not split evenly over 3 ranks"):
        shard(items, 0, 3)
    with pytest.raises(ValueError, match=re.escape("rank=2 does not lie in 0..world-1")):
        shard(items, 2, 2)


def test_context_from_the_environment() -> None:
    assert context_from_env({}) is None
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    context = context_from_env(env)
    assert context is not None
    assert (context.rank, context.world_size, context.local_rank) == (1, 2, 1)
    assert not context.is_main and not context.fsdp
    assert context.backend == backend_for(torch.cuda.is_available())
    with pytest.raises(ValueError, match="MASTER_PORT is not"):
        context_from_env({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ValueError, match=re.escape("RANK=2 does not lie in 0..WORLD_SIZE-1")):
        context_from_env({**env, "RANK": "2"})
    with pytest.raises(ValueError, match="RANK='x' is not a whole number"):
        context_from_env({**env, "RANK": "x"})


def test_backend_for() -> None:
    assert backend_for(True) == "nccl"
    assert backend_for(False) == "gloo"


def test_rank_zero_only_runs_the_action_once() -> None:
    seen: list[str] = []
    for rank in (0, 1):
        rank_zero_only(DistContext(rank, 2, rank, "gloo"), seen.append)(f"rank {rank}")
    rank_zero_only(None, seen.append)("alone")
    assert seen == ["rank 0", "alone"]


def test_the_trainer_refuses_a_group_of_another_size() -> None:
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, SMALL)
    policy = Policy(load_model("tiny", None), recipe.model, keep_reference=False, seed=0)
    with pytest.raises(
        ValueError, match=re.escape("layout.num_gpus=1 but the process group has 2 ranks")
    ):
        Trainer(policy, recipe, DistContext(0, 2, 0, "gloo"))


def test_collectives_by_hand(two_ranks: list[dict[str, Any]]) -> None:
    for rank in two_ranks:
        got = rank["collectives"]
        # Gradients (1, 10) and (2, 20): mean (1.5, 15).
        torch.testing.assert_close(got["grad"], torch.tensor([1.5, 15.0]), rtol=0, atol=0)
        assert got["untouched"] is None
        assert got["sum"] == [3.0, 6.0]
        assert got["min"] == [1.0] and got["max"] == [2.0]
        # Payloads of different lengths, by rank, on every rank.
        assert [g["rank"] for g in got["gathered"]] == [0, 1]
        assert [g["ones"].tolist() for g in got["gathered"]] == [[1.0], [1.0, 1.0]]
    assert [rank["context"].rank for rank in two_ranks] == [0, 1]
    assert {rank["context"].backend for rank in two_ranks} == {"gloo"}


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicas", "fsdp"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_two_gloo_ranks_take_the_single_process_step(
    two_ranks: list[dict[str, Any]], target: str, fsdp: bool
) -> None:
    alone = train_once(target, None)
    start = Policy(
        load_model("tiny", None),
        apply_overrides(PRESETS["tiny-color"].recipe, TARGETS[target]).model,
        keep_reference=False,
        seed=PRESETS["tiny-color"].recipe.run.seed,
    ).state_dict()
    for rank in two_ranks:
        update: Update = rank[target, fsdp]
        assert update.fsdp == fsdp
        assert update.weights.keys() == alone.weights.keys() == start.keys()
        assert update.grads.keys() == alone.grads.keys() == start.keys()
        # The steps moved the weights by far more than the tolerance ...
        moved = max(
            (weight - start[name]).abs().max().item() for name, weight in alone.weights.items()
        )
        assert moved > 100 * ATOL
        for name, weight in alone.weights.items():
            # ... and both runs moved them alike.
            torch.testing.assert_close(update.weights[name], weight, atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(update.grads[name], alone.grads[name], atol=ATOL, rtol=RTOL)
        assert update.replay.finite == alone.replay.finite
        assert update.replay.max_ratio_deviation == pytest.approx(
            alone.replay.max_ratio_deviation, abs=1e-7
        )
        assert len(update.metrics) == len(alone.metrics) == 2
        assert all(m.grad_norm > SMALL["max_grad_norm"] for m in alone.metrics)
        # The KL term is live: zero at the start, not after the first step.
        assert alone.metrics[0].kl == 0 and alone.metrics[1].kl > 0
        for mine, reference in zip(update.metrics, alone.metrics, strict=True):
            for field, value in mine._asdict().items():
                assert value == pytest.approx(getattr(reference, field), rel=RTOL, abs=ATOL), field
        # AdamW's moments, gathered whole, are the single process's (same keys, same values).
        assert update.optimizer["state"].keys() == alone.optimizer["state"].keys()
        for index, entry in alone.optimizer["state"].items():
            for key, value in entry.items():
                got = update.optimizer["state"][index][key]
                assert not isinstance(got, DTensor) and got.shape == value.shape, key
                torch.testing.assert_close(got, value, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fsdp_state_gathered_and_loaded_back_is_the_same(
    two_ranks: list[dict[str, Any]], target: str
) -> None:
    for rank in two_ranks:
        update: Update = rank[target, True]
        assert update.reloaded is not None
        weights, optimizer = update.reloaded
        assert weights.keys() == update.weights.keys()
        for name, weight in update.weights.items():
            assert torch.equal(weights[name], weight), name
        for index, entry in update.optimizer["state"].items():
            for key, value in entry.items():
                assert torch.equal(optimizer["state"][index][key], value), (index, key)


def test_the_ranks_report_identical_numbers(two_ranks: list[dict[str, Any]]) -> None:
    first, second = two_ranks
    for key in ((target, fsdp) for target in TARGETS for fsdp in (False, True)):
        assert first[key].metrics == second[key].metrics
        assert first[key].replay == second[key].replay
        for name, weight in first[key].weights.items():
            assert torch.equal(weight, second[key].weights[name]), name


def test_a_failing_rank_is_reported_not_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 2 failed first") as failure:
        launch(2, fail_on_rank_one, timeout=120)
    assert "rank one's reward server is gone" in str(failure.value)
    assert time.monotonic() - started < 60


def test_a_stuck_rank_times_out() -> None:
    with pytest.raises(TimeoutError, match=r"ranks \[(0, )?1\] of 2 were still running after 5 s"):
        launch(2, stuck, timeout=5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fsdp_on_two_gpus_takes_the_single_gpu_step(target: str) -> None:
    # nccl + FSDP (fully_shard); never run on this project's CPU machines.
    alone = train_once(target, None, device="cuda")
    for update in launch(2, _fsdp_rank, target, timeout=600):
        for name, weight in alone.weights.items():
            torch.testing.assert_close(update.weights[name], weight, atol=1e-5, rtol=1e-4)
        assert update.metrics[0].grad_norm == pytest.approx(alone.metrics[0].grad_norm, rel=1e-4)


def _fsdp_rank(context: DistContext, target: str) -> Update:
    return train_once(target, context, device=f"cuda:{context.local_rank}", fsdp=True)


def _bf16_rank(context: DistContext) -> dict[str, Any]:
    """A bf16 full fine-tune with KL, its transformer and reference sharded over the group."""
    policy, _trainer, sharded = _policy("full", context, "cpu", True, dtype="bfloat16")
    reference = policy.reference_module
    assert reference is not None and sharded is not None
    update = train_once("full", context, fsdp=True, dtype="bfloat16")
    return {
        "reference": {(type(p).__name__, p.dtype) for p in reference.parameters()},
        "masters": {(type(p).__name__, p.dtype) for p in policy.parameters},
        "update": update,
    }


def test_fsdp_shards_a_bf16_reference_and_keeps_float32_master_shards() -> None:
    ranks = launch(2, _bf16_rank, timeout=300)
    alone = train_once("full", None, dtype="bfloat16")
    for rank in ranks:
        # The frozen reference is sharded in the model dtype, the masters in float32.
        assert rank["reference"] == {("DTensor", torch.bfloat16)}
        assert rank["masters"] == {("DTensor", torch.float32)}
        update: Update = rank["update"]
        assert update.replay.max_ratio_deviation < 1e-5
        # The KL to the sharded reference is live (0 at the start, then not) and the step is
        # one process's, up to bf16: FSDP computes with the whole units gathered in bf16, one
        # process with autocast's per-op casts of the same float32 weights.
        assert update.metrics[0].kl == 0 and update.metrics[1].kl > 0
        for mine, reference in zip(update.metrics, alone.metrics, strict=True):
            assert mine.kl == pytest.approx(reference.kl, rel=0.05)
            assert mine.grad_norm == pytest.approx(reference.grad_norm, rel=0.05)
        for name, weight in alone.weights.items():
            assert update.weights[name].dtype == torch.float32
            torch.testing.assert_close(update.weights[name], weight, atol=5e-3, rtol=0)
