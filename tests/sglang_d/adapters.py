"""LoRA adapters for the weight-sync tests."""

from __future__ import annotations

import torch

from engine.models.loading import load_model
from engine.policy import Policy
from engine.recipe import ModelConfig


def trained_lora(seed: int) -> Policy:
    """The tiny model with attention adapters moved as an update would (B starts at zero)."""
    policy = Policy(load_model("tiny", None), ModelConfig(lora_target="attn"),
                    keep_reference=False, seed=3)  # fmt: skip
    with torch.no_grad():
        for parameter in policy.parameters:
            noise = torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed))
            parameter.add_(noise * 0.05)
    return policy
