"""One stochastic denoising step of a flow-matching sampler, with its Gaussian log-probability.

Conventions: the model predicts the velocity v = noise - x0 on the path x_t = (1 - t) x0 + t noise;
``sigmas`` is the scheduler's decreasing schedule from 1 to 0 (diffusers' ``scheduler.sigmas``,
N + 1 values for N steps), and step ``i`` goes from t = sigmas[i] to t_next = sigmas[i + 1].

Two samplers, both from the Flow-GRPO line of work:

- ``sde``: Flow-GRPO's reverse SDE (Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models
  via Online RL", arXiv:2505.05470, section 4.2 and eq. 9/12);
- ``cps``: coefficients-preserving sampling ("Coefficients-Preserving Sampling for Reinforcement
  Learning with Flow Matching", arXiv:2509.05952), whose noise does not inflate the image's
  noise coefficient.

Every function is pure: tensors in, a ``StepResult`` out. Noise comes from the caller's
generators (one per sample, DESIGN.md), or the caller passes ``prev_sample`` to have its
log-probability evaluated instead (replaying a rollout in training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


class StepResult(NamedTuple):
    """One step for a batch of B samples.

    ``prev_sample`` has the input's shape and dtype; the rest is float32. ``log_prob`` [B] is the
    log-density of ``prev_sample`` averaged over all non-batch dimensions (NaN where ``std`` is
    0: a deterministic step has no density). ``mean`` is the Gaussian's mean, ``std`` its
    standard deviation and ``kl_std`` the scale the KL term divides by (see ``kl_divergence``);
    both broadcast against the sample ([B, 1, ...]).
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    kl_std: torch.Tensor


def sde_step(
    sde_type: str,
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigmas: torch.Tensor,
    index: int | torch.Tensor,
    *,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
) -> StepResult:
    """Dispatch to ``flow_grpo_step`` (``"sde"``) or ``cps_step`` (``"cps"``)."""
    steps = {"sde": flow_grpo_step, "cps": cps_step}
    if sde_type not in steps:
        raise ValueError(f"sde_type must be 'sde' or 'cps', not {sde_type!r}")
    return steps[sde_type](
        velocity,
        sample,
        sigmas,
        index,
        noise_level=noise_level,
        prev_sample=prev_sample,
        generator=generator,
    )


def flow_grpo_step(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigmas: torch.Tensor,
    index: int | torch.Tensor,
    *,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
) -> StepResult:
    """Flow-GRPO's SDE step (arXiv:2505.05470, eq. 9 discretised as eq. 12).

    With a = ``noise_level`` and dt = t_next - t < 0:

    - sigma_t = a sqrt(t / (1 - t)), where at t = 1 the denominator is 1 - sigmas[1], as
      Flow-GRPO does, to keep it finite;
    - mean = x (1 + sigma_t^2 dt / (2t)) + v (1 + sigma_t^2 (1 - t) / (2t)) dt;
    - std = sigma_t sqrt(-dt).

    With a = 0 this is the Euler ODE step x + v dt.
    """
    x, v, t, t_next = _prepare(velocity, sample, sigmas, index)
    dt = t_next - t
    one_minus_t = 1.0 - torch.where(t == 1.0, sigmas[1].to(t), t)
    sigma_t = noise_level * torch.sqrt(t / one_minus_t)
    mean = x * (1 + sigma_t**2 * dt / (2 * t)) + v * (1 + sigma_t**2 * (1 - t) / (2 * t)) * dt
    std = sigma_t * torch.sqrt(-dt)
    prev, noisy = _draw(mean, std, sample.dtype, prev_sample, generator)
    log_prob = _mean_over_sample(_gaussian_log_density(noisy, mean, std))
    return StepResult(prev, _nan_where_deterministic(log_prob, std), mean, std, sigma_t)


def cps_step(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigmas: torch.Tensor,
    index: int | torch.Tensor,
    *,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: Generators = None,
) -> StepResult:
    """Coefficients-preserving step (arXiv:2509.05952, eq. 8 and its Flow-GRPO implementation).

    std = t_next sin(a pi / 2); x0 = x - t v and x1 = x + (1 - t) v are the predicted image and
    noise; mean = (1 - t_next) x0 + sqrt(t_next^2 - std^2) x1, so that mean + std * eps keeps the
    coefficients (1 - t_next) on x0 and t_next on the total noise. With a = 0 it is the Euler step.

    ``log_prob`` is -(x' - mean)^2 averaged over non-batch dimensions, the Gaussian log-density
    with its constants dropped and scaled by 2 std^2, as the paper's code trains with; its
    differences are therefore not log-ratios, and clip ranges tuned for ``sde`` do not carry over.
    """
    x, v, t, t_next = _prepare(velocity, sample, sigmas, index)
    std = t_next * math.sin(noise_level * math.pi / 2)
    x0 = x - t * v
    x1 = x + (1 - t) * v
    # Clamped because t_next^2 - std^2 can round to a tiny negative at noise_level 1.
    mean = (1 - t_next) * x0 + torch.sqrt(torch.clamp(t_next**2 - std**2, min=0.0)) * x1
    prev, noisy = _draw(mean, std, sample.dtype, prev_sample, generator)
    log_prob = _mean_over_sample(-((noisy - mean) ** 2))
    return StepResult(prev, _nan_where_deterministic(log_prob, std), mean, std, std)


def step_log_prob(result: StepResult, *, with_constants: bool) -> torch.Tensor:
    """``result``'s log-prob [B] in either of sglang's conventions (``rollout_log_prob_no_const``).

    With constants it is the Gaussian log-density averaged over the sample (what ``sde`` steps
    report); without, -(x' - mean)^2 averaged over the sample, what ``cps`` steps report and
    sglang 0.5.23 returns for ``rollout_log_prob_no_const=true``
    (``flow_rollout_controller.py`` line 292 and 309, summed then divided by the element count).
    """
    value = result.prev_sample.float()
    if with_constants:
        density = _gaussian_log_density(value, result.mean, result.std)
        return _nan_where_deterministic(_mean_over_sample(density), result.std)
    return _mean_over_sample(-((value - result.mean) ** 2))


def kl_divergence(mean: torch.Tensor, ref_mean: torch.Tensor, kl_std: torch.Tensor) -> torch.Tensor:
    """KL [B] between the policy's and the reference model's Gaussians for the same step.

    Both share the step's std, so KL = |mean - ref_mean|^2 / (2 s^2), averaged over non-batch
    dimensions like ``log_prob``. As DESIGN.md fixes it, s is ``StepResult.kl_std``: for ``sde``
    Flow-GRPO's per-step sigma_t with the sqrt(|dt|) factor dropped (the KL is then |dt| times
    larger than the exact one), for ``cps`` the step's std. Flow-GRPO computes it this way, so
    published ``kl_beta`` values mean the same here.
    """
    squared = _mean_over_sample((mean.float() - ref_mean.float()) ** 2)
    return squared / (2 * kl_std.float().reshape(-1) ** 2)


def per_sample_noise(
    shape: Sequence[int], generators: Generators, device: torch.device
) -> torch.Tensor:
    """Standard normal noise of ``shape`` [B, ...] in float32.

    With a list of B generators, sample b's noise comes from generator b alone, so it does not
    depend on which other samples share the batch (DESIGN.md: changing M changes nothing).
    """
    if generators is None or isinstance(generators, torch.Generator):
        return torch.randn(tuple(shape), generator=generators, device=device)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack(
        [torch.randn(tuple(shape[1:]), generator=g, device=device) for g in generators]
    )


def _prepare(
    velocity: torch.Tensor, sample: torch.Tensor, sigmas: torch.Tensor, index: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upcast to float32: (x, v, t, t_next), with t and t_next shaped [B or 1, 1, ...].

    float32 throughout because bf16 keeps 8 bits of mantissa: the mean subtracts nearly equal
    terms and log-probs are compared as exp(new - old) against a clip range of 1e-4, which bf16
    rounding alone would exceed (Flow-GRPO casts to float32 for the same reason).
    """
    if velocity.shape != sample.shape:
        raise ValueError(f"velocity {tuple(velocity.shape)} and sample {tuple(sample.shape)}")
    sigmas = sigmas.to(device=sample.device, dtype=torch.float32)
    index = torch.as_tensor(index, device=sample.device, dtype=torch.long).reshape(-1)
    shape = (-1,) + (1,) * (sample.dim() - 1)
    t = sigmas[index].reshape(shape)
    t_next = sigmas[index + 1].reshape(shape)
    return sample.float(), velocity.float(), t, t_next


def _draw(
    mean: torch.Tensor,
    std: torch.Tensor | float,
    dtype: torch.dtype,
    prev_sample: torch.Tensor | None,
    generator: Generators,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next sample in ``dtype`` and, in float32, the value its log-prob is taken at.

    A fresh sample is rounded to ``dtype`` before its log-prob is taken, so that replaying the
    stored sample in training reproduces the rollout's log-prob exactly.
    """
    if prev_sample is None:
        noise = per_sample_noise(mean.shape, generator, mean.device)
        prev_sample = (mean + std * noise).to(dtype)
    return prev_sample, prev_sample.float()


def _gaussian_log_density(
    value: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    return -((value - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)


def _mean_over_sample(values: torch.Tensor) -> torch.Tensor:
    return values.mean(dim=tuple(range(1, values.dim())))


def _nan_where_deterministic(log_prob: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    deterministic = torch.as_tensor(std, device=log_prob.device).reshape(-1) == 0
    return torch.where(deterministic, torch.full_like(log_prob, math.nan), log_prob)
