"""Run health checks: each fires on a crafted bad rollout and passes on a good one."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from engine import events
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample
from engine.run.health import (
    PhaseSeconds,
    check_distinct_samples,
    check_distinct_seeds,
    check_group_reward_std,
    check_log_probs_finite,
    check_log_probs_shape,
    check_phase_shares,
    check_replay,
    check_zero_std_groups,
    phase_seconds,
    rollout_health,
)
from engine.trainer import Replay
from tests.recipes import GROUPS_OF_TWO

GROUPS, GROUP_SIZE, MICRO, WINDOW = 2, 4, 2, 2
PROMPTS = ["a red image", "a blue image"]
GOOD_REWARDS = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.7]], dtype=torch.float64)
GOOD_TIMES = PhaseSeconds(encode=0.2, denoise=5.0, decode=0.3, reward=0.5, train=4.0)


def sample(seed: int) -> RolloutSample:
    """A sample whose image, log-probs and trajectory all follow from its seed."""
    generator = torch.Generator().manual_seed(seed)
    return RolloutSample(
        seed=seed,
        image=torch.randint(0, 256, (8, 8, 3), generator=generator, dtype=torch.uint8).numpy(),
        log_probs=torch.randn(WINDOW, generator=generator),
        latents=torch.randn(WINDOW + 1, 3, 2, 2, generator=generator),
        sigmas=torch.linspace(1.0, 0.5, WINDOW + 1),
    )


def rollout() -> list[RolloutResult]:
    """P=2 groups of G=4 in requests of M=2, seeds 100 + 4g + i, timings 0.1/0.2/0.3 each."""
    results = []
    for group in range(GROUPS):
        for start in range(0, GROUP_SIZE, MICRO):
            seeds = tuple(100 + group * GROUP_SIZE + i for i in range(start, start + MICRO))
            request = RolloutRequest(
                prompt=PROMPTS[group],
                seeds=seeds,
                height=8,
                width=8,
                num_inference_steps=4,
                sde_step_indices=(0, 1),
                group_index=group,
            )
            results.append(
                RolloutResult(
                    request=request,
                    samples=tuple(sample(seed) for seed in seeds),
                    schedule=torch.linspace(1.0, 0.0, 5),
                    timings=PhaseTimings(encode=0.1, denoise=0.2, decode=0.3),
                    dit_forwards=4,
                )
            )
    return results


def with_sample(results: list[RolloutResult], index: int, row: int, **changes: object) -> None:
    """Replace one field of results[index].samples[row] in place."""
    samples = list(results[index].samples)
    samples[row] = dataclasses.replace(samples[row], **changes)  # type: ignore[arg-type]
    results[index] = dataclasses.replace(results[index], samples=tuple(samples))


def health(results: list[RolloutResult], **changes: object) -> dict[str, events.HealthCheck]:
    arguments: dict[str, object] = {
        "results": results,
        "rewards": GOOD_REWARDS,
        "zero_std_groups": (),
        "replay": Replay(1e-7, True),
        "phase_seconds": GOOD_TIMES,
        "prompts": PROMPTS,
        "sde_window_size": WINDOW,
    }
    event = rollout_health(3, **{**arguments, **changes})  # type: ignore[arg-type]
    assert event.step == 3
    return {check.name: check for check in event.checks}


def failing(checks: dict[str, events.HealthCheck]) -> dict[str, str]:
    return {name: check.status for name, check in checks.items() if check.status != "pass"}


def test_a_good_rollout_passes_every_check() -> None:
    checks = health(rollout())
    assert list(checks) == [
        "log_probs_finite",
        "log_probs_shape",
        "distinct_seeds",
        "distinct_samples",
        "replay",
        "zero_std_groups",
        "group_reward_std",
        "phase_shares",
    ]
    assert failing(checks) == {}
    assert checks["log_probs_finite"].message == "all 16 rollout log-probs are finite"
    assert checks["distinct_samples"].value == 0
    # The event round-trips through JSON as the sinks store it.
    event = rollout_health(
        1,
        results=rollout(),
        rewards=GOOD_REWARDS,
        zero_std_groups=(),
        replay=None,
        phase_seconds=GOOD_TIMES,
        prompts=PROMPTS,
        sde_window_size=WINDOW,
    )
    assert events.Event.from_json(event.to_json()) == event
    assert "replay" not in {c.name for c in event.checks}, "no replay before an update"


def test_a_nan_log_prob_fails() -> None:
    results = rollout()
    with_sample(results, 2, 1, log_probs=torch.tensor([0.1, math.nan]))
    checks = health(results)
    assert failing(checks) == {"log_probs_finite": "fail"}
    check = checks["log_probs_finite"]
    assert check.value == 1
    # Request 2 is group 1's first: seeds 104, 105; row 1 is seed 105, its window step 1.
    assert "1 of 16 rollout log-probs are not finite (group 1, seed 105, window step 1)" in (
        check.message
    )
    assert "noise_level" in check.message
    with_sample(results, 0, 0, log_probs=torch.tensor([math.inf, 0.0]))
    assert check_log_probs_finite(results).value == 2


def test_log_probs_of_the_wrong_shape_fail() -> None:
    results = rollout()
    with_sample(results, 1, 0, log_probs=torch.zeros(1))
    check = health(results)["log_probs_shape"]
    assert (check.status, check.value) == ("fail", 1)
    assert "group 0 seeds 102.. gave [2, 1] or [2, 2] for [2, 2]" in check.message
    # A request answered with fewer samples than seeds is the wrong M.
    short = rollout()
    short[3] = dataclasses.replace(short[3], samples=short[3].samples[:1])
    check = check_log_probs_shape(short, WINDOW)
    assert (check.status, check.value) == ("fail", 1)
    assert "gave [1, 2] for [2, 2]" in check.message
    assert check_log_probs_shape(rollout(), 3).value == 4, "every request when T is wrong"


def test_a_duplicated_seed_fails() -> None:
    results = rollout()
    with_sample(results, 3, 1, seed=100)
    checks = health(results)
    assert failing(checks) == {"distinct_seeds": "fail"}
    assert checks["distinct_seeds"].value == 1
    assert "seed 100 in groups 0, 1" in checks["distinct_seeds"].message
    assert check_distinct_seeds(rollout()).status == "pass"


def test_identical_samples_fail_when_their_noise_is_shared_and_warn_when_collapsed() -> None:
    shared = rollout()
    twin = shared[0].samples[0]
    with_sample(shared, 1, 0, image=twin.image, latents=twin.latents)
    with_sample(shared, 1, 1, image=twin.image, latents=twin.latents)
    check = health(shared)["distinct_samples"]
    assert (check.status, check.value) == ("fail", 2)
    assert "group 0, seeds 100, 102, 103" in check.message
    assert "share their noise" in check.message

    collapsed = rollout()
    with_sample(collapsed, 3, 0, image=collapsed[2].samples[0].image)
    check = check_distinct_samples(collapsed)
    assert (check.status, check.value) == ("warn", 1)
    assert "collapsed" in check.message

    # The same image in two different groups is no problem: groups are compared separately.
    across = rollout()
    with_sample(across, 2, 0, image=across[0].samples[0].image)
    assert check_distinct_samples(across).status == "pass"


@pytest.mark.parametrize(
    ("replay", "status"),
    [
        (Replay(1e-7, True), "pass"),
        (Replay(1e-5, True), "pass"),
        (Replay(2e-5, True), "warn"),
        (Replay(2e-3, True), "fail"),
        (Replay(0.0, False), "fail"),
        (Replay(math.nan, True), "fail"),
    ],
)
def test_replay_off_warns_then_fails(replay: Replay, status: str) -> None:
    check = health(rollout(), replay=replay)["replay"]
    assert check.status == status
    if status != "pass":
        assert "micro_batch_size_sample" in check.message
    assert check_replay(replay).status == status


def test_zero_std_groups_warn_and_fail_when_every_group_is_flat() -> None:
    flat = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    checks = health(rollout(), rewards=flat, zero_std_groups=(0,))
    check = checks["zero_std_groups"]
    assert (check.status, check.value) == ("warn", 1)
    assert check.message.startswith("1 of 2 group(s) with equal rewards carry no signal: a red")
    every = check_zero_std_groups((0, 1), PROMPTS, 2)
    assert (every.status, every.value) == ("fail", 2)
    assert check_zero_std_groups((), PROMPTS, 2).status == "pass"


def test_group_reward_std_numbers() -> None:
    # Group 0: population std of 0,1,0,1 = 0.5. Group 1: mean 0.55, deviations -0.05 (x3) and
    # 0.15, variance (3 x 0.0025 + 0.0225) / 4 = 0.0075, std 0.0866025. Mean 0.2933013.
    check = check_group_reward_std(GOOD_REWARDS)
    assert check.status == "pass"
    assert check.value == pytest.approx(0.2933013, abs=1e-7)

    # Group stds 0.005 each; the whole rollout's std is 0.500025 (means 0.005 and 1.005):
    # the ratio 0.01 is under 10 %.
    split = torch.tensor([[0.0, 0.01, 0.0, 0.01], [1.0, 1.01, 1.0, 1.01]], dtype=torch.float64)
    check = check_group_reward_std(split)
    assert (check.status, check.value) == ("warn", pytest.approx(0.005))
    assert "whole rollout 0.5" in check.message and "noise_level" in check.message

    # One group: the ratio is 1, but a std of 5e-5 is under the 1e-3 floor.
    tiny = torch.tensor([[0.0, 1e-4, 0.0, 1e-4]], dtype=torch.float64)
    check = check_group_reward_std(tiny)
    assert (check.status, check.value) == ("warn", pytest.approx(5e-5))
    assert "epsilon" in check.message

    assert check_group_reward_std(torch.zeros(2, 4)).status == "warn"
    nan = GOOD_REWARDS.clone()
    nan[1, 2] = math.nan
    check = health(rollout(), rewards=nan)["group_reward_std"]
    assert check.status == "fail"
    assert check.message.startswith("1 of 8 rewards are not finite")


def test_reward_dominating_the_step_warns_with_the_share() -> None:
    slow = PhaseSeconds(encode=0.5, denoise=2.0, decode=0.4, reward=6.1, train=1.0)
    check = health(rollout(), phase_seconds=slow, reward_names=["PickScore"])["phase_shares"]
    assert (check.status, check.value) == ("warn", pytest.approx(0.61))
    assert check.message.startswith(
        "reward takes 61% of the step (reward 61%, denoise 20%, train 10%, encode 5%, "
        "decode 4%, weight sync 0% of 10.00 s): move PickScore to its own device"
    )
    decode = check_phase_shares(PhaseSeconds(0.0, 1.0, 3.0, 0.0, 1.0, 0.0))
    assert (decode.status, decode.value) == ("warn", pytest.approx(0.6))
    assert decode.message.startswith("decode takes 60%")
    # GOOD_TIMES: 10 s, of which reward 0.5 s is the largest overhead.
    good = check_phase_shares(GOOD_TIMES)
    assert (good.status, good.value) == ("pass", pytest.approx(0.05))
    assert good.message == (
        "denoise 50%, train 40%, reward 5%, decode 3%, encode 2%, weight sync 0% of 10.00 s"
    )
    assert check_phase_shares(PhaseSeconds(0.0, 0.0, 0.0, 0.0)).status == "pass"


def test_phase_seconds_sums_the_requests_timings() -> None:
    # Four requests of encode 0.1, denoise 0.2, decode 0.3.
    seconds = phase_seconds(rollout(), reward=1.5, train=2.5)
    assert seconds == pytest.approx(PhaseSeconds(0.4, 0.8, 1.2, 1.5, 2.5, 0.0))


def test_images_one_level_apart_are_different() -> None:
    results = rollout()
    nudged = results[0].samples[1].image.copy()
    nudged[0, 0, 0] ^= 1
    with_sample(results, 0, 0, image=nudged)
    assert not np.array_equal(results[0].samples[0].image, results[0].samples[1].image)
    assert check_distinct_samples(results).status == "pass"


def test_a_real_tiny_rollout_is_healthy() -> None:
    """The loop's own pieces on the tiny model: every check passes, replay included."""
    from engine.advantages import group_advantages
    from engine.layout import layout
    from engine.models.tiny.weights import load_tiny
    from engine.overrides import apply_overrides
    from engine.policy import Policy
    from engine.presets import PRESETS
    from engine.rewards import build_rewards
    from engine.rollout.in_process import InProcessBackend
    from engine.rollout.plan import rollout_requests
    from engine.trainer import Trainer

    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            "rollout_batch_size": 2,
            **GROUPS_OF_TWO,
            "num_inference_steps": 4,
            "height": 16,
            "width": 16,
        },
    )
    model = load_tiny()
    policy = Policy(model, recipe.model, keep_reference=False, seed=0)
    backend = InProcessBackend(model)
    results = [backend.generate(r) for r in rollout_requests(recipe, PROMPTS, 0)]
    images = np.concatenate([r.images for r in results])
    prompts = [r.request.prompt for r in results for _ in r.samples]
    scores = build_rewards(recipe.rewards)(images, prompts, [{}] * len(prompts)).scores
    rewards = torch.as_tensor(np.asarray(scores), dtype=torch.float64).reshape(2, 2)
    advantages = group_advantages(rewards, globalize_reward_std=True, adv_clip_max=5.0)
    conditionings = [
        model.encode_prompts([r.request.prompt], None).repeat(r.request.num_outputs)
        for r in results
    ]
    replay, _ = Trainer(policy, recipe).train_rollout(
        results, conditionings, list(advantages.advantages.flatten().split(2))
    )
    checks = health(
        results,
        rewards=rewards,
        zero_std_groups=advantages.zero_std_groups,
        replay=replay,
        phase_seconds=phase_seconds(results, reward=0.01, train=1.0),
        sde_window_size=len(layout(recipe).sde_window),
    )
    assert failing(checks) == {}, checks
