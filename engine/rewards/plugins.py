"""Rewards from installed packages, found through Python entry points.

A package declares, in the entry-point group ``groupwise.rewards``, a name and the factory that
builds the reward (a class or function, ``"package.module:Factory"``). The factory may carry
``needs_path = True`` (it is then called with the weights directory), ``path_setting`` (the
environment variable read when a recipe gives no path) and a docstring whose first line becomes
the reward's description. ``docs/rewards.md`` shows a complete package.

Discovery imports each plugin's module, so plugins keep heavy imports (models, CUDA) inside the
factory. A plugin that fails to load is logged and remembered, never fatal: a recipe that does not
name it still validates, and one that does gets the plugin's error.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from engine.rewards.entries import RewardEntry, register_reward, registered_names

log = logging.getLogger(__name__)

#: The entry-point group plugins declare their rewards in.
ENTRY_POINT_GROUP = "groupwise.rewards"

# Entry points already registered, by reward name (their "module:attribute"), and why those that
# failed did.
_REGISTERED: dict[str, str] = {}
_FAILURES: dict[str, str] = {}
_discovered = False


def discover_rewards() -> list[str]:
    """Register the rewards of every installed plugin not yet registered; return their names.

    Safe to call again (e.g. after installing a package at run time): entry points already
    registered are skipped. A plugin whose name a built-in or another plugin already holds is
    skipped with a warning rather than allowed to replace it.
    """
    global _discovered
    # Set first: a plugin's module that looks rewards up while it loads must not start
    # discovery again.
    _discovered = True
    added = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if _REGISTERED.get(point.name) == point.value:
            continue
        if point.name in registered_names():
            log.warning(
                "reward plugin %s = %s is ignored: the name '%s' is already taken",
                point.name,
                point.value,
                point.name,
            )
            continue
        entry = _load(point)
        if entry is None:
            continue
        register_reward(
            entry.name,
            entry.factory,
            description=entry.description,
            needs_path=entry.needs_path,
            path_setting=entry.path_setting,
        )
        _REGISTERED[point.name] = point.value
        _FAILURES.pop(point.name, None)
        added.append(point.name)
    return added


def discover_rewards_once() -> None:
    """Run ``discover_rewards`` the first time any reward is looked up."""
    if not _discovered:
        discover_rewards()


def forget_plugin(name: str) -> None:
    """Drop what discovery remembers of ``name`` (after ``unregister_reward``, for tests)."""
    _REGISTERED.pop(name, None)
    _FAILURES.pop(name, None)


def plugin_failure(name: str) -> str | None:
    """Why the plugin reward ``name`` could not be loaded, or ``None``."""
    return _FAILURES.get(name)


def _load(point: EntryPoint) -> RewardEntry | None:
    source = f"{point.value} (from {point.dist.name if point.dist else 'an unknown package'})"
    try:
        factory = point.load()
    except Exception as error:  # a broken plugin must not stop the others, whatever it raises
        _fail(point.name, f"{source} cannot be imported: {type(error).__name__}: {error}")
        return None
    if not callable(factory):
        _fail(point.name, f"{source} is a {type(factory).__name__}, not a reward factory")
        return None
    doc = (factory.__doc__ or "").strip()
    return RewardEntry(
        name=point.name,
        factory=factory,
        description=doc.splitlines()[0] if doc else f"reward plugin {source}",
        needs_path=bool(getattr(factory, "needs_path", False)),
        path_setting=getattr(factory, "path_setting", None),
    )


def _fail(name: str, reason: str) -> None:
    log.warning("reward plugin '%s' is unavailable: %s", name, reason)
    _FAILURES[name] = reason
