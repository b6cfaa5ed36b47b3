"""The plain registry of reward models, by name.

A recipe names rewards; the registry turns a name into a ``Reward``. Entries hold their factory
as a ``"module:attribute"`` string, imported only when the reward is built, so that validating a
recipe never imports a reward's heavy dependencies (OCR engines, CLIP).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from engine.rewards.base import Reward

RewardFactory = Callable[..., Reward]


@dataclass(frozen=True)
class RewardEntry:
    """One registered reward.

    ``factory`` is called with no argument, or with the local weights directory when
    ``needs_path`` is true; either the callable itself or its ``"module:attribute"`` address.
    """

    name: str
    factory: str | RewardFactory
    description: str
    needs_path: bool = False


_REGISTRY: dict[str, RewardEntry] = {}


def register_reward(
    name: str,
    factory: str | RewardFactory,
    *,
    description: str,
    needs_path: bool = False,
) -> None:
    """Add a reward under ``name``; raises ``ValueError`` if the name is taken."""
    if name in _REGISTRY:
        raise ValueError(f"a reward named '{name}' is already registered")
    _REGISTRY[name] = RewardEntry(name, factory, description, needs_path)


def unregister_reward(name: str) -> None:
    """Remove a reward (for plugins and tests that register their own)."""
    del _REGISTRY[name]


def reward_names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def reward_entry(name: str) -> RewardEntry:
    """The entry for ``name``; raises ``KeyError`` naming the known rewards."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(reward_names())
        raise KeyError(f"no reward named '{name}': use one of {known}") from None


def build_reward(name: str, path: str | None = None) -> Reward:
    """Instantiate the reward ``name``, loading its weights from ``path`` if it has any."""
    entry = reward_entry(name)
    if entry.needs_path and not path:
        raise ValueError(f"reward '{name}' loads its model from a local directory: set its path")
    if not entry.needs_path and path:
        raise ValueError(f"reward '{name}' has no weights to load: leave its path empty")
    factory = _resolve(entry) if isinstance(entry.factory, str) else entry.factory
    return factory(path) if entry.needs_path else factory()


def _resolve(entry: RewardEntry) -> RewardFactory:
    assert isinstance(entry.factory, str)
    module_name, _, attribute = entry.factory.partition(":")
    try:
        factory: RewardFactory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise RuntimeError(
            f"reward '{entry.name}' is registered but {entry.factory} cannot be loaded: {error}"
        ) from error
    return factory


register_reward(
    "color",
    "engine.rewards.color:ColorReward",
    description="1 minus the distance between the image's mean colour and the prompt's colour",
)
register_reward(
    "color_pixel",
    "engine.rewards.color:PixelColorReward",
    description="the colour reward per pixel, averaged: an image must be the colour everywhere",
)
# The model-based rewards of the published recipes. Their implementations (engine/rewards/ocr.py
# and pickscore.py) come with the model-backed rollouts; until then recipes naming them validate
# but building them raises a RuntimeError that names the missing module.
register_reward(
    "ocr",
    "engine.rewards.ocr:OcrReward",
    description="text rendering: 1 minus the normalised edit distance to the quoted text",
    needs_path=True,
)
register_reward(
    "pickscore",
    "engine.rewards.pickscore:PickScoreReward",
    description="PickScore human-preference model (CLIP-H), scaled to about [0, 1]",
    needs_path=True,
)
