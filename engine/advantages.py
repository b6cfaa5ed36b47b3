"""Group-relative advantages (GRPO; Flow-GRPO, arXiv:2505.05470, eq. 4).

For prompt group g with rewards r_g1..r_gG:

    A_gi = clip((r_gi - mean_g) / (std + eps), -adv_clip_max, adv_clip_max)

where std is the group's own standard deviation, or that of every reward in the rollout when
``globalize_reward_std`` is set (Flow-GRPO's ``global_std``). Standard deviations are the
population ones (divide by G), as Flow-GRPO's ``np.std``. A group whose rewards are all equal
has zero advantages and carries no learning signal: such groups are reported.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Keeps a near-constant group from producing huge advantages (Flow-GRPO uses 1e-4).
EPSILON = 1e-4


class Advantages(NamedTuple):
    """``advantages`` [P, G] float32; ``zero_std_groups`` the indices of signal-free groups."""

    advantages: torch.Tensor
    zero_std_groups: tuple[int, ...]


def group_advantages(
    rewards: torch.Tensor, *, globalize_reward_std: bool, adv_clip_max: float
) -> Advantages:
    """Advantages of ``rewards`` [P, G] (P prompt groups of G samples each).

    float64 inside: rewards of a converged group differ in their last digits, and the
    difference is divided by a std of the same size.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [P, G] with G >= 2, not {tuple(rewards.shape)}")
    values = rewards.to(torch.float64)
    mean = values.mean(dim=1, keepdim=True)
    group_std = values.std(dim=1, correction=0, keepdim=True)
    std = values.std(correction=0) if globalize_reward_std else group_std
    advantages = ((values - mean) / (std + EPSILON)).clamp(-adv_clip_max, adv_clip_max)
    zero = tuple(int(g) for g in torch.nonzero(group_std.squeeze(1) == 0).flatten())
    return Advantages(advantages.to(torch.float32), zero)
