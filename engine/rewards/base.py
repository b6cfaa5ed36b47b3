"""The reward contract: a batch of images, their prompts and metadata in; a score per image out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Images = npt.NDArray[np.uint8]
Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RewardOutput:
    """Scores of a batch: ``scores`` [B] (higher is better) and named ``components``, each [B].

    Components are the parts a reward wants shown beside its score (e.g. the mean colour); they
    do not enter the training signal.
    """

    scores: Scores
    components: Mapping[str, Scores] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.ndim != 1:
            raise ValueError(f"scores must have shape [B], not {self.scores.shape}")
        for name, values in self.components.items():
            if values.shape != self.scores.shape:
                raise ValueError(
                    f"component '{name}' has shape {values.shape}, scores {self.scores.shape}"
                )


class Reward(Protocol):
    """A reward model: ``reward(images, prompts, metadata) -> RewardOutput``.

    ``images`` is uint8 [B, H, W, 3] (RGB); ``prompts`` and ``metadata`` have one entry per image.
    """

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput: ...


def check_batch(
    images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
) -> int:
    """Raise ``ValueError`` unless the arguments form one batch; return its size B."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], not {images.dtype} {images.shape}")
    size = images.shape[0]
    if len(prompts) != size or len(metadata) != size:
        raise ValueError(
            f"{size} images need {size} prompts and metadata, got {len(prompts)} and "
            f"{len(metadata)}"
        )
    return size
