"""The SDE steps against densities written out by hand in float64, and the ODE against diffusers."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from engine.sde import cps_step, flow_grpo_step, kl_divergence, per_sample_noise, sde_step

SHAPE = (3, 4, 8, 8)


def schedule(steps=10, shift=3.0):
    """diffusers' shifted flow-matching schedule, built locally (no hub access)."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(steps)
    return scheduler


def tensors(seed=0):
    generator = torch.Generator().manual_seed(seed)
    velocity = torch.randn(SHAPE, generator=generator)
    sample = torch.randn(SHAPE, generator=generator)
    return velocity, sample


def reference_sde(x, v, sigmas, i, a):
    """Flow-GRPO's step by hand, float64: (mean, std, sigma_t)."""
    t, t_next = float(sigmas[i]), float(sigmas[i + 1])
    dt = t_next - t
    # At t = 1, t / (1 - t) would divide by zero; Flow-GRPO uses 1 - sigmas[1] instead.
    denominator = 1 - float(sigmas[1]) if t == 1.0 else 1 - t
    sigma_t = a * math.sqrt(t / denominator)
    mean = x * (1 + sigma_t**2 * dt / (2 * t)) + v * (1 + sigma_t**2 * (1 - t) / (2 * t)) * dt
    return mean, sigma_t * math.sqrt(-dt), sigma_t


def reference_cps(x, v, sigmas, i, a):
    """The coefficients-preserving step by hand, float64: (mean, std)."""
    t, t_next = float(sigmas[i]), float(sigmas[i + 1])
    std = t_next * math.sin(a * math.pi / 2)
    x0, x1 = x - t * v, x + (1 - t) * v
    return (1 - t_next) * x0 + math.sqrt(t_next**2 - std**2) * x1, std


def gaussian_log_density(value, mean, std):
    """log N(value; mean, std^2) per element, float64."""
    return -((value - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)


def as64(tensor):
    return tensor.double().numpy()


@pytest.mark.parametrize("index", [0, 1, 4, 8])
@pytest.mark.parametrize("noise_level", [0.7, 1.2])
def test_sde_log_prob_is_the_gaussian_density(index, noise_level):
    sigmas = schedule().sigmas
    velocity, sample = tensors(index)
    step = flow_grpo_step(
        velocity,
        sample,
        sigmas,
        index,
        noise_level=noise_level,
        generator=torch.Generator().manual_seed(1),
    )
    mean, std, sigma_t = reference_sde(as64(sample), as64(velocity), sigmas, index, noise_level)
    density = gaussian_log_density(as64(step.prev_sample), mean, std).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(as64(step.mean), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as64(step.std).ravel(), std, rtol=1e-5)
    np.testing.assert_allclose(as64(step.kl_std).ravel(), sigma_t, rtol=1e-5)
    np.testing.assert_allclose(as64(step.log_prob), density, rtol=1e-4, atol=1e-4)
    assert step.log_prob.shape == (SHAPE[0],)


@pytest.mark.parametrize("index", [0, 3, 8])
@pytest.mark.parametrize("noise_level", [0.5, 0.8, 1.0])
def test_cps_log_prob_is_the_scaled_gaussian_density(index, noise_level):
    sigmas = schedule().sigmas
    velocity, sample = tensors(index + 10)
    step = cps_step(
        velocity,
        sample,
        sigmas,
        index,
        noise_level=noise_level,
        generator=torch.Generator().manual_seed(2),
    )
    mean, std = reference_cps(as64(sample), as64(velocity), sigmas, index, noise_level)
    value = as64(step.prev_sample)
    np.testing.assert_allclose(as64(step.mean), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as64(step.std).ravel(), std, rtol=1e-5)
    np.testing.assert_allclose(as64(step.kl_std), as64(step.std))
    # -(x' - mean)^2 is the Gaussian log-density scaled by 2 std^2 with its constants dropped.
    scaled = 2 * std**2 * (gaussian_log_density(value, mean, std) + math.log(std))
    scaled += 2 * std**2 * 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(as64(step.log_prob), scaled.mean(axis=(1, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(
        as64(step.log_prob), (-((value - mean) ** 2)).mean(axis=(1, 2, 3)), atol=1e-6
    )


@pytest.mark.parametrize("step_function", [flow_grpo_step, cps_step])
def test_a_fresh_sample_is_mean_plus_std_times_the_generators_noise(step_function):
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    step = step_function(
        velocity, sample, sigmas, 2, noise_level=0.7, generator=torch.Generator().manual_seed(5)
    )
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(step.prev_sample, step.mean + step.std * noise)


@pytest.mark.parametrize("step_function", [flow_grpo_step, cps_step])
def test_replaying_a_sample_returns_its_log_prob(step_function):
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    rollout = step_function(
        velocity, sample, sigmas, 3, noise_level=0.7, generator=torch.Generator().manual_seed(3)
    )
    replay = step_function(
        velocity, sample, sigmas, 3, noise_level=0.7, prev_sample=rollout.prev_sample
    )
    assert torch.equal(replay.prev_sample, rollout.prev_sample)
    assert torch.equal(replay.log_prob, rollout.log_prob)


def test_bf16_samples_replay_exactly():
    # The rollout's log-prob is taken at the bf16-rounded sample that training will replay.
    sigmas = schedule().sigmas
    velocity, sample = (t.bfloat16() for t in tensors())
    rollout = flow_grpo_step(
        velocity, sample, sigmas, 1, noise_level=1.2, generator=torch.Generator().manual_seed(0)
    )
    assert rollout.prev_sample.dtype == torch.bfloat16
    assert rollout.log_prob.dtype == rollout.mean.dtype == torch.float32
    replay = flow_grpo_step(
        velocity, sample, sigmas, 1, noise_level=1.2, prev_sample=rollout.prev_sample
    )
    assert torch.equal(replay.log_prob, rollout.log_prob)


@pytest.mark.parametrize("step_function", [flow_grpo_step, cps_step])
def test_each_sample_draws_from_its_own_generator(step_function):
    # Sample 1 in a batch of 3 equals sample 1 alone: the microgroup size changes nothing.
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    seeds = [11, 12, 13]
    batch = step_function(
        velocity,
        sample,
        sigmas,
        2,
        noise_level=0.7,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    alone = step_function(
        velocity[1:2],
        sample[1:2],
        sigmas,
        2,
        noise_level=0.7,
        generator=[torch.Generator().manual_seed(12)],
    )
    torch.testing.assert_close(batch.prev_sample[1:2], alone.prev_sample)
    torch.testing.assert_close(batch.log_prob[1:2], alone.log_prob)


def test_per_sample_step_indices():
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    indices = torch.tensor([0, 4, 8])
    together = flow_grpo_step(
        velocity, sample, sigmas, indices, noise_level=0.7, prev_sample=sample * 0.9
    )
    for row, index in enumerate(indices.tolist()):
        alone = flow_grpo_step(
            velocity[row : row + 1],
            sample[row : row + 1],
            sigmas,
            index,
            noise_level=0.7,
            prev_sample=sample[row : row + 1] * 0.9,
        )
        torch.testing.assert_close(together.log_prob[row : row + 1], alone.log_prob)
        torch.testing.assert_close(together.mean[row : row + 1], alone.mean)


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_noise_level_zero_is_diffusers_euler_step(sde_type):
    scheduler = schedule(steps=10, shift=3.0)
    sigmas = scheduler.sigmas.clone()
    velocity_generator = torch.Generator().manual_seed(9)
    ours = theirs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    for index, timestep in enumerate(scheduler.timesteps):
        velocity = torch.randn(SHAPE, generator=velocity_generator)
        theirs = scheduler.step(velocity, timestep, theirs).prev_sample
        step = sde_step(sde_type, velocity, ours, sigmas, index, noise_level=0.0)
        ours = step.prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        # A deterministic step has no density.
        assert torch.isnan(step.log_prob).all()


def test_kl_is_zero_for_equal_means_and_matches_the_formula():
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    policy = flow_grpo_step(velocity, sample, sigmas, 2, noise_level=0.7, prev_sample=sample)
    reference = flow_grpo_step(
        velocity + 0.1, sample, sigmas, 2, noise_level=0.7, prev_sample=sample
    )
    assert torch.equal(kl_divergence(policy.mean, policy.mean, policy.kl_std), torch.zeros(3))
    kl = kl_divergence(policy.mean, reference.mean, policy.kl_std)
    # |dt| dropped: the divisor is sigma_t^2, not the step's variance sigma_t^2 |dt|.
    t, t_next = float(sigmas[2]), float(sigmas[3])
    sigma_t = 0.7 * math.sqrt(t / (1 - t))
    difference = as64(policy.mean) - as64(reference.mean)
    expected = (difference**2).mean(axis=(1, 2, 3)) / (2 * sigma_t**2)
    np.testing.assert_allclose(as64(kl), expected, rtol=1e-5)
    exact = (difference**2).mean(axis=(1, 2, 3)) / (2 * sigma_t**2 * (t - t_next))
    np.testing.assert_allclose(as64(kl), exact * (t - t_next), rtol=1e-5)
    assert (kl > 0).all()


def test_cps_kl_divides_by_the_steps_variance():
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    policy = cps_step(velocity, sample, sigmas, 2, noise_level=0.8, prev_sample=sample)
    reference = cps_step(velocity - 0.2, sample, sigmas, 2, noise_level=0.8, prev_sample=sample)
    std = float(sigmas[3]) * math.sin(0.8 * math.pi / 2)
    difference = as64(policy.mean) - as64(reference.mean)
    np.testing.assert_allclose(
        as64(kl_divergence(policy.mean, reference.mean, policy.kl_std)),
        (difference**2).mean(axis=(1, 2, 3)) / (2 * std**2),
        rtol=1e-5,
    )


def test_errors():
    sigmas = schedule().sigmas
    velocity, sample = tensors()
    with pytest.raises(ValueError, match="sde_type must be 'sde' or 'cps'"):
        sde_step("ode", velocity, sample, sigmas, 0, noise_level=0.7)
    with pytest.raises(ValueError, match="velocity"):
        flow_grpo_step(velocity[:2], sample, sigmas, 0, noise_level=0.7)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        per_sample_noise(SHAPE, [torch.Generator(), torch.Generator()], torch.device("cpu"))
