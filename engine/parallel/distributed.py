"""Data-parallel training through ``torch.distributed``: the process group, the split of a
rollout's samples over ranks, the gradient and metric all-reduces, object broadcasts and
gathers (FSDP sharding is ``engine.parallel.fsdp``).

Every rank holds the whole rollout and trains on its ``shard`` of each optimizer step's samples
(``global_batch_size / num_gpus`` of them, DESIGN.md section 1). A rank's loss is the mean over its
own share; the average of the ranks' gradients is then the gradient of the mean over the whole
step, the single-process gradient, because every rank holds the same number of elements.

Ranks find each other through the standard variables that ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); ``engine.run.ranks`` sets them
itself to start a run's group on one machine. Without ``WORLD_SIZE`` there is no group: one process,
no context.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, cast

import torch
import torch.distributed as dist

T = TypeVar("T")
Op = Literal["sum", "min", "max"]
_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
#: The environment variables a rank reads; ``torchrun`` and ``engine.run.ranks`` set all of them.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel group."""

    #: This process's rank, 0 .. world_size - 1.
    rank: int
    #: The number of ranks (the recipe's ``num_gpus``).
    world_size: int
    #: The rank on this host: the index of its GPU.
    local_rank: int
    #: ``nccl`` (CUDA tensors) or ``gloo`` (CPU tensors).
    backend: str
    #: Whether FSDP shards the transformer and reduces its gradients (``engine.parallel.fsdp``).
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes events and checkpoints."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where this rank's tensors, and the collectives' buffers, live."""
        return (
            torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        )


def backend_for(cuda: bool) -> str:
    """``nccl`` between GPUs, ``gloo`` on CPU."""
    return "nccl" if cuda else "gloo"


def context_from_env(environ: Mapping[str, str] = os.environ) -> DistContext | None:
    """The context the environment describes, or None when ``WORLD_SIZE`` is unset.

    Raises ``ValueError`` naming the variable that is missing or wrong.
    """
    if "WORLD_SIZE" not in environ:
        return None
    missing = [name for name in ENV_VARS if name not in environ and name != "LOCAL_RANK"]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun, which "
            "sets them all"
        )
    numbers = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = environ.get(name, environ["RANK"])
        if not text.isdigit():
            raise ValueError(f"{name}={text!r} is not a whole number")
        numbers[name] = int(text)
    if not (numbers["WORLD_SIZE"] >= 1 and numbers["RANK"] < numbers["WORLD_SIZE"]):
        raise ValueError(
            f"RANK={numbers['RANK']} does not lie in 0..WORLD_SIZE-1 "
            f"(WORLD_SIZE={numbers['WORLD_SIZE']})"
        )
    return DistContext(
        rank=numbers["RANK"],
        world_size=numbers["WORLD_SIZE"],
        local_rank=numbers["LOCAL_RANK"],
        backend=backend_for(torch.cuda.is_available()),
    )


def init(timeout: timedelta = timedelta(minutes=10)) -> DistContext | None:
    """Join the process group the environment describes; None (and nothing done) without one.

    A collective that waits longer than ``timeout`` for a rank fails instead of hanging.
    """
    context = context_from_env()
    if context is None:
        return None
    if context.backend == "nccl":
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(
        context.backend,
        rank=context.rank,
        world_size=context.world_size,
        timeout=timeout,
    )
    return context


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s contiguous share of ``items``: the same on every call and every rank.

    Contiguous keeps a microgroup's samples together, so tiles the size of the rollout's
    microgroups stay exact replays. Raises ``ValueError`` when ``world`` does not divide them.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank={rank} does not lie in 0..world-1 (world={world})")
    if len(items) % world:
        raise ValueError(
            f"{len(items)} samples do not split evenly over {world} ranks: global_batch_size "
            "must be a multiple of num_gpus"
        )
    size = len(items) // world
    return list(items[rank * size : (rank + 1) * size])


def average_gradients(parameters: Iterable[torch.Tensor], context: DistContext | None) -> None:
    """Replace every parameter's gradient by its mean over the ranks (one collective).

    With equal shares and each rank's loss a mean over its share, the mean of the ranks'
    gradients is the gradient of the mean over all samples. Parameters without a gradient are
    left alone, as the optimizer leaves them: every rank runs the same code on the same model, so
    they are the same on every rank. Does nothing without a context.
    """
    if context is None:
        return
    grads = [param.grad for param in parameters if param.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    # Division by the world size: exact for the power-of-two sizes GPUs come in.
    flat /= context.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def reduce_floats(values: Sequence[float], op: Op, context: DistContext | None) -> list[float]:
    """``values`` reduced element-wise over the ranks; every rank gets the same numbers.

    float64 so that sums of metrics do not lose digits. Returns them unchanged without a context.
    """
    if context is None:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=_OPS[op])
    return [float(value) for value in tensor.tolist()]


def barrier(context: DistContext | None) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
    if context is not None:
        dist.barrier()


class RankZeroFailed(RuntimeError):
    """Raised on the other ranks when rank 0's part of ``on_rank_zero`` raised: they end too."""


def broadcast_object(value: T, context: DistContext | None) -> T:
    """Rank 0's ``value`` on every rank (what the others pass is ignored).

    The value travels as ``torch.save`` bytes in a uint8 tensor on the rank's device and is
    loaded with ``map_location`` set to this rank's device: nccl ranks never unpickle a tensor
    onto rank 0's GPU. Without a context, ``value`` itself.
    """
    if context is None:
        return value
    device = context.device
    size = torch.zeros(1, dtype=torch.int64, device=device)
    payload = torch.empty(0, dtype=torch.uint8)
    if context.is_main:
        payload = _pack(value, device)
        size[0] = payload.numel()
    dist.broadcast(size, src=0)
    if context.is_main:
        dist.broadcast(payload, src=0)
        return value
    payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=0)
    received: T = _unpack(payload, device)
    return received


def all_gather_objects(value: T, context: DistContext) -> list[T]:
    """Every rank's ``value``, by rank, on every rank (like ``broadcast_object``: ``torch.save``
    bytes, loaded onto this rank's device, so no tensor lands on another rank's GPU)."""
    mine = _pack(value, context.device)
    sizes = [
        torch.zeros(1, dtype=torch.int64, device=context.device) for _ in range(context.world_size)
    ]
    dist.all_gather(sizes, torch.tensor([mine.numel()], dtype=torch.int64, device=context.device))
    longest = max(int(size.item()) for size in sizes)
    # all_gather moves tensors of one shape: pad every payload to the longest.
    padded = torch.zeros(longest, dtype=torch.uint8, device=context.device)
    padded[: mine.numel()] = mine
    payloads = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(payloads, padded)
    return [
        _unpack(payload[: int(size.item())], context.device)
        for payload, size in zip(payloads, sizes, strict=True)
    ]


def _pack(value: Any, device: torch.device) -> torch.Tensor:
    """``value`` as ``torch.save`` bytes in a uint8 tensor on ``device``."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(device)


def _unpack(payload: torch.Tensor, device: torch.device) -> Any:
    """What ``_pack`` packed, its tensors loaded onto ``device`` (this rank's own)."""
    return torch.load(
        io.BytesIO(payload.cpu().numpy().tobytes()), map_location=device, weights_only=False
    )


def on_rank_zero(
    context: DistContext | None,
    work: Callable[[], T],
    *,
    share: Callable[[T], T] = lambda value: value,
    passes: tuple[type[Exception], ...] = (),
) -> T:
    """``work()`` on rank 0 alone; its result on rank 0, ``share(result)`` on the others.

    The other ranks wait in the broadcast meanwhile, so the call is also a barrier: nothing after
    it starts before rank 0's work is done. When the work raises, every rank raises: rank 0 its
    exception, the others the same exception when its type is in ``passes`` (a stop, which every
    rank ends with), else ``RankZeroFailed`` naming it. Without a context, just ``work()``.
    """
    if context is None:
        return work()
    if not context.is_main:
        # Rank 0 sends the value or the exception to raise; what this rank passes is ignored.
        outcome = cast("T | Exception", broadcast_object(None, context))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    try:
        value = work()
    except Exception as error:
        broadcast_object(_portable(error, passes), context)
        raise
    broadcast_object(share(value), context)
    return value


def _portable(error: Exception, passes: tuple[type[Exception], ...]) -> Exception:
    """What the other ranks raise for rank 0's ``error``: itself when it passes and pickles."""
    if isinstance(error, passes):
        try:
            pickle.dumps(error)
            return error
        except Exception:
            pass
    return RankZeroFailed(f"rank 0 failed: {type(error).__name__}: {error}")


def rank_zero_only(context: DistContext | None, action: Callable[..., None]) -> Callable[..., None]:
    """``action`` on rank 0 (or without a context), a no-op elsewhere: for event sinks and
    checkpoint writers, so a run's side effects happen once."""
    if context is None or context.is_main:
        return action

    def skip(*_args: Any, **_kwargs: Any) -> None:
        return None

    return skip
