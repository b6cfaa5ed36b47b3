"""The GRPO update of one rollout (Flow-GRPO, arXiv:2505.05470, eq. 5-6).

For every sample i and stochastic step t of the rollout, with r = exp(log p_new - log p_old):

    loss = mean_{i,t} max(-A_i r, -A_i clip(r, 1 - clip_range, 1 + clip_range)) + kl_beta KL

The old log-probs are recomputed by the trainer before the first update (DESIGN.md), with the
same code and batches as the rollout; their distance from the backend's log-probs is the replay
deviation, reported as a health check. Samples are cut into tiles of ``micro_batch_size_sample``
samples x ``micro_batch_size_tstep`` steps, whose gradients accumulate over the
``global_batch_size`` samples of each of the ``num_steps_per_rollout`` optimizer steps. Tiles the
size of the rollout's microgroups replay exactly; other sizes change the DiT's batches.

Data-parallel (``engine.parallel.distributed``): with a context, each rank trains on its ``shard``
of every optimizer step's samples, its loss the mean over its share; the ranks' gradients are
averaged (by ``average_gradients``, or by FSDP) before clipping, so every rank clips the same global
gradient and takes the single-process step. Metrics and the replay check are reduced over the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from engine.events import StepMetrics
from engine.models.base import FlowModel
from engine.models.conditioning import Conditioning
from engine.parallel import distributed
from engine.parallel.distributed import DistContext
from engine.policy import Policy
from engine.recipe import Recipe
from engine.rollout.steps import stochastic_step
from engine.rollout.types import RolloutResult
from engine.sde import kl_divergence


class Replay(NamedTuple):
    """How the trainer's recomputed old log-probs compare with the backend's."""

    #: max |exp(recomputed - backend) - 1| over every sample and step.
    max_ratio_deviation: float
    #: Whether every recomputed log-prob is finite.
    finite: bool


@dataclass(frozen=True)
class _Tile:
    """Samples (result index, row) and the window positions k trained together."""

    samples: tuple[tuple[int, int], ...]
    steps: tuple[int, ...]


class Trainer:
    """Owns the optimizer; ``train_rollout`` takes the recipe's optimizer steps on one rollout.

    ``context`` is this rank's place in a data-parallel group of ``layout.num_gpus`` ranks; None
    trains in this process alone, whatever ``num_gpus`` says.
    """

    def __init__(self, policy: Policy, recipe: Recipe, context: DistContext | None = None) -> None:
        if context is not None and context.world_size != recipe.layout.num_gpus:
            raise ValueError(
                f"layout.num_gpus={recipe.layout.num_gpus} but the process group has "
                f"{context.world_size} ranks: set num_gpus={context.world_size} or start "
                f"{recipe.layout.num_gpus} processes"
            )
        self.policy = policy
        self.recipe = recipe
        self.context = context
        opt = recipe.optimiser
        # The policy's trainable weights are float32 (engine.policy), so AdamW's moments are too.
        self.optimizer = torch.optim.AdamW(
            policy.parameters, lr=opt.lr, weight_decay=opt.weight_decay
        )
        self.scaler = _loss_scaler(policy.model, self.optimizer)

    def train_rollout(
        self,
        results: Sequence[RolloutResult],
        conditionings: Sequence[Conditioning],
        advantages: Sequence[torch.Tensor],
    ) -> tuple[Replay, list[StepMetrics]]:
        """Recompute the old log-probs, then take ``num_steps_per_rollout`` optimizer steps.

        ``conditionings[j]`` and ``advantages[j]`` ([M]) belong to ``results[j]``. Every rank passes
        the whole rollout and gets the same replay and metrics back.
        """
        layout = self.recipe.layout
        window = len(results[0].request.sde_step_indices)
        order = [(j, row) for j, result in enumerate(results) for row in range(len(result.samples))]
        per_step = len(order) // layout.num_steps_per_rollout
        batches = [
            self._share(order[k * per_step : (k + 1) * per_step])
            for k in range(layout.num_steps_per_rollout)
        ]
        tiles = [self._tiles(batch, window) for batch in batches]

        old: dict[tuple[int, int], torch.Tensor] = {}
        with torch.no_grad():
            for tile in (t for step_tiles in tiles for t in step_tiles):
                result = self._log_probs(results, conditionings, tile)
                for (j, row), values in zip(tile.samples, result.log_probs, strict=True):
                    empty = torch.full((window,), math.nan, device=values.device)
                    old.setdefault((j, row), empty)[list(tile.steps)] = values
        replay = self._reduce_replay(_replay(results, old))
        metrics = [
            self._optimizer_step(
                results, conditionings, advantages, step_tiles, old, len(batch) * window
            )
            for batch, step_tiles in zip(batches, tiles, strict=True)
        ]
        return replay, metrics

    def _share(self, batch: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """This rank's samples of one optimizer step (all of them without a context)."""
        if self.context is None:
            return batch
        return distributed.shard(batch, self.context.rank, self.context.world_size)

    def _reduce_replay(self, replay: Replay) -> Replay:
        """The worst deviation over every rank's samples."""
        (deviation,) = distributed.reduce_floats([replay.max_ratio_deviation], "max", self.context)
        (finite,) = distributed.reduce_floats([float(replay.finite)], "min", self.context)
        return Replay(deviation, bool(finite))

    def _tiles(self, batch: list[tuple[int, int]], window: int) -> list[_Tile]:
        size, tsteps = (
            self.recipe.layout.micro_batch_size_sample,
            self.recipe.layout.micro_batch_size_tstep,
        )
        return [
            _Tile(tuple(batch[s : s + size]), tuple(range(k, min(k + tsteps, window))))
            for s in range(0, len(batch), size)
            for k in range(0, window, tsteps)
        ]

    def _log_probs(
        self, results: Sequence[RolloutResult], conditionings: Sequence[Conditioning], tile: _Tile
    ) -> _TileResult:
        """Each of the tile's steps replayed on its samples' stored latents: log-probs
        [S, len(steps)], and the Gaussians' means and KL scales for the KL term."""
        request = results[tile.samples[0][0]].request
        schedule = results[0].schedule
        conditioning = _rows(conditionings, tile.samples)
        chain = torch.stack([results[j].samples[row].latents for j, row in tile.samples])
        log_probs, means, kl_stds = [], [], []
        for k in tile.steps:
            step = stochastic_step(
                self.policy.model,
                chain[:, k],
                schedule,
                request.sde_step_indices[k],
                conditioning,
                request,
                prev_sample=chain[:, k + 1],
            )
            log_probs.append(step.log_prob)
            means.append(step.mean)
            kl_stds.append(step.kl_std)
        return _TileResult(torch.stack(log_probs, dim=1), means, kl_stds, conditioning, chain)

    def _optimizer_step(
        self,
        results: Sequence[RolloutResult],
        conditionings: Sequence[Conditioning],
        advantages: Sequence[torch.Tensor],
        tiles: list[_Tile],
        old: dict[tuple[int, int], torch.Tensor],
        elements: int,
    ) -> StepMetrics:
        """One optimizer step on this rank's ``tiles``, which hold ``elements`` (sample, step)
        pairs: the same number on every rank."""
        opt = self.recipe.optimiser
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "policy": 0.0, "kl": 0.0, "clipped": 0.0}
        ratios: list[torch.Tensor] = []
        for tile in tiles:
            current = self._log_probs(results, conditionings, tile)
            old_lp = torch.stack([old[s][list(tile.steps)] for s in tile.samples])
            adv = torch.stack([advantages[j][row] for j, row in tile.samples])[:, None]
            policy_terms, ratio = clipped_surrogate(current.log_probs, old_lp, adv, opt.clip_range)
            kl_terms = torch.zeros_like(policy_terms)
            if opt.kl_beta > 0:
                kl_terms = self._kl(results, tile, current)
            # Sums over the tile, divided by this rank's element count for the step: the
            # accumulated gradient is that of the mean over the rank's share, and the ranks'
            # average (equal shares) that of the mean over the whole step.
            loss = (policy_terms + opt.kl_beta * kl_terms).sum() / elements
            self.scaler.scale(loss).backward()
            totals["loss"] += loss.item()
            totals["policy"] += policy_terms.sum().item() / elements
            totals["kl"] += kl_terms.sum().item() / elements
            totals["clipped"] += ((ratio - 1).abs() > opt.clip_range).sum().item()
            ratios.append(ratio.detach().flatten())
        if self.context is not None and not self.context.fsdp:
            distributed.average_gradients(self.policy.parameters, self.context)
        # After the average every rank holds the global gradient (or, under FSDP, its shard of
        # it, whose norm FSDP's DTensors combine): all ranks clip by the same global norm.
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters, opt.max_grad_norm)
        # Without loss scaling (bf16, float32) this is optimizer.step(); with it, a step whose
        # gradient overflowed float16 is skipped and the scale lowered.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        every = torch.cat(ratios)
        world = 1 if self.context is None else self.context.world_size
        # Per-rank means averaged over equal shares are the global means; counts are summed.
        step_loss, policy_loss, kl, clipped, ratio_sum = distributed.reduce_floats(
            [
                totals["loss"] / world,
                totals["policy"] / world,
                totals["kl"] / world,
                totals["clipped"],
                every.sum().item(),
            ],
            "sum",
            self.context,
        )
        ratio_min, negative_max = distributed.reduce_floats(
            [every.min().item(), -every.max().item()], "min", self.context
        )
        return StepMetrics(
            loss=step_loss,
            policy_loss=policy_loss,
            kl=kl,
            clip_fraction=clipped / (elements * world),
            ratio_mean=ratio_sum / (every.numel() * world),
            ratio_min=ratio_min,
            ratio_max=-negative_max,
            grad_norm=_scalar(grad_norm),
            lr=self.optimizer.param_groups[0]["lr"],
        )

    def _kl(
        self, results: Sequence[RolloutResult], tile: _Tile, current: _TileResult
    ) -> torch.Tensor:
        """KL [S, len(steps)] to the reference policy at the same inputs (DESIGN.md's form)."""
        request = results[tile.samples[0][0]].request
        terms = []
        with torch.no_grad(), self.policy.reference():
            for position, k in enumerate(tile.steps):
                reference = stochastic_step(
                    self.policy.model,
                    current.chain[:, k],
                    results[0].schedule,
                    request.sde_step_indices[k],
                    current.conditioning,
                    request,
                    prev_sample=current.chain[:, k + 1],
                )
                terms.append((position, reference.mean))
        return torch.stack(
            [
                kl_divergence(current.means[position], mean, current.kl_stds[position])
                for position, mean in terms
            ],
            dim=1,
        )


def _loss_scaler(model: FlowModel, optimizer: torch.optim.Optimizer) -> torch.amp.GradScaler:
    """Dynamic loss scaling for a float16 model, a pass-through for any other dtype.

    float16 keeps 5 exponent bits, so the small gradients of a backward through float16
    activations flush to zero unless the loss is scaled up first (bfloat16 has float32's range
    and needs none). The scale is state a resumed run must continue from: it travels in the
    optimizer's state dict, under ``grad_scaler``, so checkpoints carry it unchanged.
    """
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.dtype == torch.float16)
    if scaler.is_enabled():

        def save(_: torch.optim.Optimizer, state: dict[str, Any]) -> None:
            state["grad_scaler"] = scaler.state_dict()

        def load(_: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
            rest = dict(state)
            saved = rest.pop("grad_scaler", None)
            if saved is not None:
                scaler.load_state_dict(saved)
            return rest

        optimizer.register_state_dict_post_hook(save)
        optimizer.register_load_state_dict_pre_hook(load)
    return scaler


def rollout_conditionings(model: FlowModel, results: Sequence[RolloutResult]) -> list[Conditioning]:
    """What ``train_rollout`` takes: each request's conditioning repeated to its M rows, each
    prompt (with its negative prompt when guidance needs one) encoded once."""
    encoded: dict[tuple[str, str, bool], Conditioning] = {}
    out = []
    for result in results:
        request = result.request
        needs = model.needs_negative(request.guidance_scale, request.true_cfg_scale)
        key = (request.prompt, request.negative_prompt, needs)
        if key not in encoded:
            negative = [request.negative_prompt] if needs else None
            encoded[key] = model.encode_prompts([request.prompt], negative)
        out.append(encoded[key].repeat(request.num_outputs))
    return out


def clipped_surrogate(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective as a loss, per element: (max(-A r, -A clip(r)), r).

    r = exp(log p - log p_old); advantages broadcast against the log-probs.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped), ratio


class _TileResult(NamedTuple):
    log_probs: torch.Tensor
    means: list[torch.Tensor]
    kl_stds: list[torch.Tensor]
    conditioning: Conditioning
    chain: torch.Tensor


def _rows(
    conditionings: Sequence[Conditioning], samples: Sequence[tuple[int, int]]
) -> Conditioning:
    """The conditioning rows of ``samples``, stacked in order."""

    def stack(part: str) -> dict[str, torch.Tensor] | None:
        first = getattr(conditionings[samples[0][0]], part)
        if first is None:
            return None
        return {
            key: torch.cat(
                [getattr(conditionings[j], part)[key][row : row + 1] for j, row in samples]
            )
            for key in first
        }

    positive = stack("positive")
    assert positive is not None
    return Conditioning(positive, stack("negative"))


def _scalar(value: torch.Tensor) -> float:
    """A float from a tensor that may be an FSDP DTensor (a norm over every rank's shard)."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def _replay(results: Sequence[RolloutResult], old: dict[tuple[int, int], torch.Tensor]) -> Replay:
    deviation, finite = 0.0, True
    for (j, row), recomputed in old.items():
        backend = results[j].samples[row].log_probs
        finite = finite and bool(torch.isfinite(recomputed).all())
        if backend.numel():
            deviation = max(deviation, (torch.exp(recomputed - backend) - 1).abs().max().item())
    return Replay(deviation, finite)
