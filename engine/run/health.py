"""Run health: the checks of one rollout that need no extra work (docs/health-checks.md).

They automate the single-prompt multi-generation checklist
(docs/single-prompt-multi-generation.md) on data the loop already holds: the backend's
log-probs (finite, shaped [M, T]), the seeds and images of each prompt group, the trainer's
replay of the old log-probs, the rewards' spread inside groups and where the step's time went.
Each check is a pure function returning an ``events.HealthCheck`` whose message gives the
numbers and, when it is not a pass, what to change; ``rollout_health`` runs them all.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from engine import events
from engine.advantages import EPSILON
from engine.rollout.backend import SAME_NUMERICS, ReplayTolerance
from engine.rollout.types import RolloutResult
from engine.trainer import Replay

Status = Literal["pass", "warn", "fail"]

#: Replay max |ratio - 1| up to these is a pass / a warning; above, a failure, for a backend
#: that computes as the trainer does (each backend states its own: ``ReplayTolerance``).
REPLAY_PASS, REPLAY_WARN = SAME_NUMERICS.passes, SAME_NUMERICS.warns
#: Share of the rollout's groups with all rewards equal: above the first warns, at or above
#: the second fails (the rollout then yields no gradient at all).
ZERO_STD_WARN_SHARE, ZERO_STD_FAIL_SHARE = 0.0, 1.0
#: The mean within-group reward std warns below this fraction of the whole rollout's std:
#: the prompts then differ far more than the samples GRPO compares.
GROUP_STD_WARN_RATIO = 0.1
#: ... and below this absolute value, where the advantages' epsilon (engine.advantages.EPSILON)
#: takes 9% or more of the std they divide by and reward noise dominates.
GROUP_STD_FLOOR = 10 * EPSILON
#: A phase other than denoising and training above this share of the step's time warns.
PHASE_SHARE_WARN = 0.35
#: The phases of one iteration, in the order they are reported.
PHASES = ("encode", "denoise", "decode", "reward", "train", "weight_sync")
#: The phases that do the work GRPO is for; the others are overhead to shrink.
WORK_PHASES = ("denoise", "train")


class PhaseSeconds(NamedTuple):
    """Seconds one iteration spent in each phase (summed over its requests)."""

    #: Text encoding.
    encode: float
    #: The denoising loops (every DiT forward and SDE step).
    denoise: float
    #: Decoding latents to images.
    decode: float
    #: Reward scoring, counted in full even where it overlaps generation: on one device it
    #: competes with the DiT for the accelerator.
    reward: float
    #: Recomputing the old log-probs and the optimizer steps (0 when nothing was trained).
    train: float = 0.0
    #: Sending the new weights to the rollout backend (0 in-process).
    weight_sync: float = 0.0


def phase_seconds(
    results: Sequence[RolloutResult], *, reward: float, train: float = 0.0, weight_sync: float = 0.0
) -> PhaseSeconds:
    """The iteration's ``PhaseSeconds``: encode, denoise and decode summed from the results'
    timings, the rest as given."""
    return PhaseSeconds(
        encode=sum(r.timings.encode for r in results),
        denoise=sum(r.timings.denoise for r in results),
        decode=sum(r.timings.decode for r in results),
        reward=reward,
        train=train,
        weight_sync=weight_sync,
    )


def rollout_health(
    step: int,
    *,
    results: Sequence[RolloutResult],
    rewards: torch.Tensor,
    zero_std_groups: Sequence[int],
    replay: Replay | None,
    phase_seconds: PhaseSeconds,
    prompts: Sequence[str],
    sde_window_size: int,
    reward_names: Sequence[str] = (),
    replay_tolerance: ReplayTolerance = SAME_NUMERICS,
) -> events.Health:
    """Every check of one rollout as a ``Health`` event at ``step``.

    ``rewards`` is [P, G] in group order; ``zero_std_groups`` and ``prompts`` are indexed by
    group; ``replay`` is None before anything was trained on the rollout, and its ``replay``
    check is then left out, else measured against the backend's ``replay_tolerance``.
    ``reward_names`` only name the reward in the phase advice.
    """
    checks = [
        check_log_probs_finite(results),
        check_log_probs_shape(results, sde_window_size),
        check_distinct_seeds(results),
        check_distinct_samples(results),
        *([check_replay(replay, replay_tolerance)] if replay is not None else []),
        check_zero_std_groups(zero_std_groups, prompts, len(rewards)),
        check_group_reward_std(rewards),
        check_phase_shares(phase_seconds, reward_names),
    ]
    return events.Health(step=step, checks=tuple(checks))


def check_log_probs_finite(results: Sequence[RolloutResult]) -> events.HealthCheck:
    """``log_probs_finite``: fails when any backend log-prob is NaN or infinite."""
    bad, total, first = 0, 0, ""
    for result in results:
        for sample in result.samples:
            finite = torch.isfinite(sample.log_probs)
            total += finite.numel()
            missing = int((~finite).sum())
            if missing and not first:
                step = int(torch.nonzero(~finite.flatten())[0])
                first = (
                    f" (group {result.request.group_index}, seed {sample.seed}, window step {step})"
                )
            bad += missing
    if bad:
        return _check(
            "log_probs_finite",
            "fail",
            f"{bad} of {total} rollout log-probs are not finite{first}: a step with no noise "
            "has no density, so keep noise_level > 0 and the SDE window off the last step "
            "(sde_window_range); otherwise the SDE step overflowed, compute it in fp32",
            bad,
        )
    return _check("log_probs_finite", "pass", f"all {total} rollout log-probs are finite", 0)


def check_log_probs_shape(
    results: Sequence[RolloutResult], sde_window_size: int
) -> events.HealthCheck:
    """``log_probs_shape``: fails unless every request's log-probs are [M, T] with M its number
    of seeds and T = ``sde_window_size``."""
    wrong: list[str] = []
    for result in results:
        seeds = result.request.num_outputs
        shapes = {tuple(sample.log_probs.shape) for sample in result.samples}
        if len(result.samples) != seeds or shapes != {(sde_window_size,)}:
            got = " or ".join(
                f"[{len(result.samples)}, {', '.join(map(str, s))}]" for s in sorted(shapes)
            )
            wrong.append(
                f"group {result.request.group_index} seeds {result.request.seeds[0]}.. gave "
                f"{got or '[0]'} for [{seeds}, {sde_window_size}]"
            )
    if wrong:
        return _check(
            "log_probs_shape",
            "fail",
            f"{len(wrong)} of {len(results)} requests have log-probs of the wrong shape "
            f"({wrong[0]}): the backend must return one sample per seed with one log-prob per "
            f"stochastic step (sde_window_size={sde_window_size})",
            len(wrong),
        )
    return _check(
        "log_probs_shape",
        "pass",
        f"all {len(results)} requests have log-probs [M, {sde_window_size}]",
        0,
    )


def check_distinct_seeds(results: Sequence[RolloutResult]) -> events.HealthCheck:
    """``distinct_seeds``: fails when two samples of the rollout share a seed; ``value`` counts
    the samples beyond the first of each seed."""
    groups: defaultdict[int, list[int]] = defaultdict(list)
    for result in results:
        for sample in result.samples:
            groups[sample.seed].append(result.request.group_index)
    total = sum(len(g) for g in groups.values())
    repeated = {seed: where for seed, where in groups.items() if len(where) > 1}
    extra = sum(len(where) - 1 for where in repeated.values())
    if extra:
        seed, where = next(iter(repeated.items()))
        return _check(
            "distinct_seeds",
            "fail",
            f"{extra} of {total} samples repeat a seed (seed {seed} in groups "
            f"{', '.join(map(str, where))}): each sample needs its own seed, "
            "(rollout_seed + g x G + i) mod 2^31; check that the backend uses seeds[i] for "
            "output i",
            extra,
        )
    return _check("distinct_seeds", "pass", f"all {total} samples have distinct seeds", 0)


def check_distinct_samples(results: Sequence[RolloutResult]) -> events.HealthCheck:
    """``distinct_samples``: within each prompt group, two samples with identical images fail when
    their stochastic trajectories are identical too (they shared their noise), and warn when the
    trajectories differ (the model collapsed to one image). ``value`` counts the samples equal
    to an earlier one of their group."""
    images: defaultdict[int, Counter[bytes]] = defaultdict(Counter)
    paths: defaultdict[int, Counter[bytes]] = defaultdict(Counter)
    seeds: defaultdict[tuple[int, bytes], list[int]] = defaultdict(list)
    for result in results:
        group = result.request.group_index
        for sample in result.samples:
            image = _digest(np.ascontiguousarray(sample.image).tobytes())
            images[group][image] += 1
            paths[group][_digest(sample.latents.detach().float().cpu().numpy().tobytes())] += 1
            seeds[(group, image)].append(sample.seed)
    same_images = sum(c - 1 for counts in images.values() for c in counts.values())
    same_paths = sum(c - 1 for counts in paths.values() for c in counts.values())
    total = sum(counts.total() for counts in images.values())
    if not same_images:
        return _check(
            "distinct_samples",
            "pass",
            f"all {total} samples differ from the others of their group",
            0,
        )
    group, example = next((g, s) for (g, _), s in seeds.items() if len(s) > 1)
    where = f"group {group}, seeds {', '.join(map(str, example[:4]))}"
    if same_paths:
        return _check(
            "distinct_samples",
            "fail",
            f"{same_images} of {total} samples are identical to another of their group ({where}) "
            "down to their trajectories: the samples share their noise; each needs its own "
            "generator seeded with its own seed",
            same_images,
        )
    return _check(
        "distinct_samples",
        "warn",
        f"{same_images} of {total} samples have the same image as another of their group "
        f"({where}) from different noise: the policy has collapsed; lower the lr or set kl_beta",
        same_images,
    )


def check_replay(replay: Replay, tolerance: ReplayTolerance = SAME_NUMERICS) -> events.HealthCheck:
    """``replay``: the trainer's recomputed old log-probs against the backend's, as
    max |ratio - 1|; fails when any is non-finite or the deviation exceeds the backend's
    ``tolerance``, whose reason the message gives."""
    deviation = replay.max_ratio_deviation
    status: Status
    if not replay.finite or not math.isfinite(deviation) or deviation > tolerance.warns:
        status = "fail"
    elif deviation > tolerance.passes:
        status = "warn"
    else:
        status = "pass"
    message = (
        f"max |ratio - 1| of the recomputed old log-probs: {deviation:.2e} (pass <= "
        f"{tolerance.passes:.0e}, fail above {tolerance.warns:.0e}: {tolerance.why})"
    )
    if not replay.finite:
        message += " (non-finite recomputed log-probs)"
    if status != "pass":
        message += (
            ": the trainer does not reproduce the rollout; make "
            "micro_batch_size_sample equal diffusion_microgroup_size, keep the SDE step in fp32 "
            "and check that the backend samples with the trainer's current weights"
        )
    return _check("replay", status, message, deviation)


def check_zero_std_groups(
    zero_std_groups: Sequence[int], prompts: Sequence[str], groups: int
) -> events.HealthCheck:
    """``zero_std_groups``: groups whose rewards are all equal (zero advantages, no signal) among
    the rollout's ``groups``; warns on any, fails when every group is one."""
    count = len(zero_std_groups)
    share = count / groups if groups else 0.0
    if share <= ZERO_STD_WARN_SHARE:
        return _check("zero_std_groups", "pass", "every group's rewards differ", 0)
    status: Status = "fail" if share >= ZERO_STD_FAIL_SHARE else "warn"
    return _check(
        "zero_std_groups",
        status,
        f"{count} of {groups} group(s) with equal rewards carry no signal: "
        + "; ".join(prompts[g] for g in zero_std_groups[:5])
        + ". Raise noise_level or n_samples_per_prompt, or use a reward that is not saturated",
        count,
    )


def check_group_reward_std(rewards: torch.Tensor) -> events.HealthCheck:
    """``group_reward_std``: the mean over groups of the within-group population std of
    ``rewards`` [P, G] (as the advantages use it); fails on a non-finite reward, warns when the
    mean is below ``GROUP_STD_FLOOR`` or below ``GROUP_STD_WARN_RATIO`` x the rollout's std."""
    # float64: rewards of a converged group differ in their last digits.
    values = torch.as_tensor(rewards, dtype=torch.float64)
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        return _check(
            "group_reward_std",
            "fail",
            f"{bad} of {values.numel()} rewards are not finite: a reward model returned NaN or "
            "inf; fix or drop that reward",
            math.nan,
        )
    mean_std = float(values.std(dim=1, correction=0).mean())
    overall = float(values.std(correction=0))
    numbers = f"mean group reward std {mean_std:.3g} (whole rollout {overall:.3g})"
    if overall == 0.0:
        return _check(
            "group_reward_std",
            "warn",
            f"{numbers}: every reward is equal; the reward is saturated or ignores the image",
            mean_std,
        )
    advice = "samples of a prompt barely differ; raise noise_level or n_samples_per_prompt"
    if mean_std < GROUP_STD_FLOOR:
        return _check(
            "group_reward_std",
            "warn",
            f"{numbers} is below {GROUP_STD_FLOOR:.0e}, where the advantages' epsilon "
            f"{EPSILON:.0e} and reward noise dominate: {advice}",
            mean_std,
        )
    if mean_std < GROUP_STD_WARN_RATIO * overall:
        return _check(
            "group_reward_std",
            "warn",
            f"{numbers} is under {GROUP_STD_WARN_RATIO:.0%} of the rollout's: the prompts "
            f"differ far more than their samples; {advice}",
            mean_std,
        )
    return _check("group_reward_std", "pass", numbers, mean_std)


def check_phase_shares(
    seconds: PhaseSeconds, reward_names: Sequence[str] = ()
) -> events.HealthCheck:
    """``phase_shares``: each phase's share of the step's time (the sum of the phases); warns
    when a phase other than denoising and training takes more than ``PHASE_SHARE_WARN``.
    ``value`` is the largest such share."""
    total = sum(seconds)
    if total <= 0:
        return _check("phase_shares", "pass", "no time measured", 0.0)
    shares = {phase: getattr(seconds, phase) / total for phase in PHASES}
    listing = ", ".join(
        f"{phase.replace('_', ' ')} {share:.0%}"
        for phase, share in sorted(shares.items(), key=lambda item: -item[1])
    )
    overhead = max((p for p in PHASES if p not in WORK_PHASES), key=lambda p: shares[p])
    share = shares[overhead]
    if share <= PHASE_SHARE_WARN:
        return _check("phase_shares", "pass", f"{listing} of {total:.2f} s", share)
    reward = " and ".join(reward_names) or "the reward model"
    advice = {
        "encode": "raise diffusion_microgroup_size so each prompt is encoded once for more "
        "samples, or keep the text encoder on the accelerator",
        "decode": "raise diffusion_microgroup_size to decode bigger batches, or decode on "
        "another device",
        "reward": f"move {reward} to its own device or raise the reward batch size "
        "(diffusion_microgroup_size)",
        "weight_sync": "sync only the LoRA adapters, or place the rollout servers beside "
        "the trainer",
    }[overhead]
    return _check(
        "phase_shares",
        "warn",
        f"{overhead.replace('_', ' ')} takes {share:.0%} of the step ({listing} of "
        f"{total:.2f} s): {advice}",
        share,
    )


def _check(name: str, status: Status, message: str, value: float) -> events.HealthCheck:
    return events.HealthCheck(name=name, status=status, message=message, value=float(value))


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
