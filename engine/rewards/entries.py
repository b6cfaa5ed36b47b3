"""The table of registered rewards, by name: what the registry's built-ins and plugin discovery
write to and the registry's look-ups read.

It sits below both ``engine.rewards.registry`` (look-ups that discover plugins first) and
``engine.rewards.plugins`` (discovery, which registers here), so neither imports the other's
caller.
"""

from __future__ import annotations

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

    #: The name a recipe uses.
    name: str
    #: Builds the reward: a callable or its ``"module:attribute"`` address, imported lazily.
    factory: str | RewardFactory
    #: One line for forms and ``--help``.
    description: str
    #: Whether the factory takes the local weights directory.
    needs_path: bool = False
    #: Environment variable giving the weights directory when the recipe leaves the path empty.
    path_setting: str | None = None


_TABLE: dict[str, RewardEntry] = {}


def register_reward(
    name: str,
    factory: str | RewardFactory,
    *,
    description: str,
    needs_path: bool = False,
    path_setting: str | None = None,
) -> None:
    """Add a reward under ``name``; raises ``ValueError`` if the name is taken."""
    if name in _TABLE:
        raise ValueError(f"a reward named '{name}' is already registered")
    _TABLE[name] = RewardEntry(name, factory, description, needs_path, path_setting)


def unregister_reward(name: str) -> None:
    """Remove a reward (for plugins and tests that register their own)."""
    del _TABLE[name]


def registered_names() -> list[str]:
    """The names registered so far, sorted; plugins not yet discovered are not among them."""
    return sorted(_TABLE)


def registered(name: str) -> RewardEntry | None:
    """The entry registered under ``name``, or ``None``."""
    return _TABLE.get(name)
