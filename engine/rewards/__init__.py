"""Reward models: the contract, the registry, the weighted sum and the built-in colour rewards."""

from engine.rewards.base import Reward, RewardOutput, check_batch
from engine.rewards.combine import WeightedSum, build_rewards
from engine.rewards.registry import (
    RewardEntry,
    build_reward,
    register_reward,
    reward_entry,
    reward_names,
    unregister_reward,
)

__all__ = [
    "Reward",
    "RewardEntry",
    "RewardOutput",
    "WeightedSum",
    "build_reward",
    "build_rewards",
    "check_batch",
    "register_reward",
    "reward_entry",
    "reward_names",
    "unregister_reward",
]
