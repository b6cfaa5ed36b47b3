"""Reward models: the contract, the registry, the weighted sum and the background scorer.

The model-backed rewards (``engine.rewards.ocr``, ``pickscore``, ``remote``) are imported by the
registry only when built, so importing this package loads no model.
"""

from engine.rewards.base import Reward, RewardOutput, check_batch
from engine.rewards.combine import WeightedSum, build_rewards
from engine.rewards.entries import RewardEntry, register_reward, unregister_reward
from engine.rewards.registry import build_reward, reward_entry, reward_names, reward_path
from engine.rewards.scorer import RewardScorer, ScoredBatch, ScoredRollout

__all__ = [
    "Reward",
    "RewardEntry",
    "RewardOutput",
    "RewardScorer",
    "ScoredBatch",
    "ScoredRollout",
    "WeightedSum",
    "build_reward",
    "build_rewards",
    "check_batch",
    "register_reward",
    "reward_entry",
    "reward_names",
    "reward_path",
    "unregister_reward",
]
