"""The plain registry of reward models, by name.

A recipe names rewards; the registry turns a name into a ``Reward``. Entries hold their factory
as a ``"module:attribute"`` string, imported only when the reward is built, so that validating a
recipe never imports a reward's heavy dependencies (OCR engines, CLIP). Installed packages add
rewards through entry points (``engine.rewards.plugins``), discovered on the first look-up. The
table both write to is ``engine.rewards.entries``.
"""

from __future__ import annotations

import importlib
import os

from engine.rewards.base import Reward
from engine.rewards.entries import (
    RewardEntry,
    RewardFactory,
    register_reward,
    registered,
    registered_names,
)
from engine.rewards.plugins import discover_rewards_once, plugin_failure


def reward_names() -> list[str]:
    """Every registered name, sorted, those of installed plugins included."""
    discover_rewards_once()
    return registered_names()


def reward_entry(name: str) -> RewardEntry:
    """The entry for ``name``; raises ``KeyError`` naming the known rewards."""
    discover_rewards_once()
    entry = registered(name)
    if entry is not None:
        return entry
    failure = plugin_failure(name)
    if failure is not None:
        raise KeyError(f"reward '{name}' comes from a plugin that failed: {failure}")
    known = ", ".join(reward_names())
    raise KeyError(f"no reward named '{name}': use one of {known}")


def reward_path(name: str, path: str | None = None) -> str | None:
    """The weights directory ``name`` loads from: ``path``, else its entry's environment
    variable, else ``None``. ``build_reward`` resolves paths through this; checks of a recipe's
    paths should too, so that they accept what building accepts."""
    entry = reward_entry(name)
    if path or not entry.path_setting:
        return path or None
    return os.environ.get(entry.path_setting) or None


def build_reward(name: str, path: str | None = None) -> Reward:
    """Instantiate the reward ``name``, loading its weights from ``path`` if it has any."""
    entry = reward_entry(name)
    if not entry.needs_path and path:
        raise ValueError(f"reward '{name}' has no weights to load: leave its path empty")
    path = reward_path(name, path)
    if entry.needs_path and not path:
        where = f" or {entry.path_setting}" if entry.path_setting else ""
        raise ValueError(
            f"reward '{name}' loads its model from a local directory: set its path{where}"
        )
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
# The model-based rewards of the published recipes (engine/rewards/ocr.py and pickscore.py).
register_reward(
    "ocr",
    "engine.rewards.ocr:OcrReward",
    description="text rendering: 1 minus the normalised edit distance to the quoted text",
    needs_path=True,
    path_setting="GROUPWISE_EASYOCR_DIR",
)
register_reward(
    "pickscore",
    "engine.rewards.pickscore:PickScoreReward",
    description="PickScore human-preference model (CLIP-H), scaled to about [0, 1]",
    needs_path=True,
    path_setting="GROUPWISE_PICKSCORE_DIR",
)
# A reward model served over HTTP (engine/rewards/remote.py); its URL comes from the environment.
register_reward(
    "remote",
    "engine.rewards.remote:RemoteReward",
    description="scores from a reward server over HTTP (GROUPWISE_REMOTE_REWARD_URL)",
)
