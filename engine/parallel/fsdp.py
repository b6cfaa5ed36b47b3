"""FSDP: the policy's transformer sharded over the ranks, and gathered back whole.

``shard_policy`` makes each block of the transformer, then the transformer itself, an FSDP unit
(``fully_shard``, FSDP2): weights, gradients and AdamW's moments are split over the ranks, a
forward gathers one unit's weights at a time, and the backward's reduce-scatter averages the
gradients (so the trainer skips ``average_gradients``). It works on nccl (GPUs) and gloo (CPU).

A sharded model only runs forward with every rank taking part, so what needs the whole weights
is a collective that every rank calls at the same point: ``full_state`` gathers the trainable
weights and the optimizer state as plain CPU tensors, in the same format one process saves (a
checkpoint does not depend on how it was trained); ``load_full_state`` puts them back, each rank
keeping its shard; ``whole_tensor`` gathers one tensor (what the rollout servers' weight files
and checksum are made of, ``engine.rollout.weights.save_weights``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from engine.parallel.distributed import DistContext
from engine.policy import Policy


def shard_policy(policy: Policy, context: DistContext) -> DistContext:
    """Shard the policy's transformer over the group; the context with ``fsdp`` set.

    Call it after the model is on this rank's device and before the ``Trainer`` (its optimizer
    must see the sharded parameters). A full fine-tune's frozen reference copy (``kl_beta`` > 0)
    is sharded the same way: it runs only in the KL term, which every rank computes for each of
    its tiles, so its forwards are collectives like the policy's. One rank has nothing to share
    with: the context comes back as is.

    Below float32 each unit's weights are gathered in the model dtype, which the forward computes
    in anyway (float32 master weights would be cast by autocast right after), for half the
    traffic and the memory of a float32 gather; gradients are reduce-scattered in float32 onto
    the float32 master shards.
    """
    if context.world_size == 1:
        return context
    mesh = init_device_mesh(context.device.type, (context.world_size,))
    dtype = policy.model.dtype
    precision = (
        MixedPrecisionPolicy()
        if dtype == torch.float32
        else MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    )
    transformer = policy.model.transformer
    for module in (transformer, policy.reference_module):
        if module is None:
            continue
        for block in dit_blocks(module):
            fully_shard(block, mesh=mesh, mp_policy=precision)
        fully_shard(module, mesh=mesh, mp_policy=precision)
    policy.parameters = [p for p in transformer.parameters() if p.requires_grad]
    return replace(context, fsdp=True)


def full_state(
    policy: Policy, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trainable weights by name and ``optimizer.state_dict()``, whole and on the CPU.

    Under FSDP every rank must call it (each sharded tensor is gathered, one at a time, so no
    rank ever holds more than one whole tensor on its device beyond its shards); every rank gets
    the same values. Without FSDP, the process's own weights and state.
    """
    weights = {
        name: whole_tensor(param.detach()).cpu()
        for name, param in policy.model.transformer.named_parameters()
        if param.requires_grad
    }
    state = optimizer.state_dict()
    gathered = {
        index: {key: whole_tensor(value).cpu() for key, value in entry.items()}
        for index, entry in state["state"].items()
    }
    return weights, {**state, "state": gathered}


def load_full_state(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Restore what ``full_state`` returned (or a checkpoint of one process): every rank calls
    it with the same values and keeps its shard. Raises ``ValueError`` when names differ."""
    params = policy.parameters
    sharded = any(isinstance(param, DTensor) for param in params)
    if not sharded:
        policy.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        return
    # Unknown names pass through unchanged for Policy.load_state_dict to refuse by name.
    named = dict(policy.model.transformer.named_parameters())
    policy.load_state_dict(
        {
            name: _like(value, named[name]) if name in named else value
            for name, value in weights.items()
        }
    )
    state = {
        index: {key: _like(value, params[int(index)]) for key, value in entry.items()}
        for index, entry in optimizer_state["state"].items()
    }
    optimizer.load_state_dict({**optimizer_state, "state": state})


def whole_tensor(value: Any) -> Any:
    """A sharded DTensor gathered whole (a collective); anything else as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (whole) sharded as ``param`` is, when ``param`` is sharded and shapes match
    (AdamW's moments do; its step counter does not)."""
    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(
            value.detach().to(device=param.device, dtype=param.dtype),
            param.device_mesh,
            param.placements,
        )
    return value


def dit_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a diffusers DiT (``transformer_blocks``, FLUX's
    ``single_transformer_blocks``): the natural FSDP units."""
    return [
        block
        for name, child in module.named_children()
        if name.endswith("blocks") and isinstance(child, torch.nn.ModuleList)
        for block in child
    ]
