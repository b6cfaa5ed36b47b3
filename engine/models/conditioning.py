"""Text conditioning: the encoded prompt of a request, and its expansion to the M samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Conditioning:
    """A family's text-encoder outputs, one row per sample.

    Every tensor is batch-first and row b conditions sample b. Which keys exist is the family's
    business (``prompt_embeds``, ``pooled``, ``mask``, ...); the rollout and the trainer only
    ``repeat`` it to a microgroup and pass it back to ``FlowModel.velocity``.
    """

    #: The prompt's tensors, by name.
    positive: Mapping[str, torch.Tensor]
    #: The negative prompt's tensors (same keys and shapes), or None when no guidance needs them.
    negative: Mapping[str, torch.Tensor] | None = None

    @property
    def batch_size(self) -> int:
        """Rows per tensor."""
        return next(iter(self.positive.values())).shape[0]

    def repeat(self, copies: int) -> Conditioning:
        """Each row repeated ``copies`` times in place: [B, ...] -> [B x copies, ...].

        The copies are exact, so sample i of a microgroup sees the same conditioning whatever M is.
        """
        return Conditioning(
            _repeat(self.positive, copies),
            None if self.negative is None else _repeat(self.negative, copies),
        )

    def rows(self, indices: slice | list[int]) -> Conditioning:
        """The rows ``indices`` of every tensor."""
        return Conditioning(
            {key: value[indices] for key, value in self.positive.items()},
            None
            if self.negative is None
            else {key: value[indices] for key, value in self.negative.items()},
        )


def _repeat(tensors: Mapping[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    return {key: value.repeat_interleave(copies, dim=0) for key, value in tensors.items()}
