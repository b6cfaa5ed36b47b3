"""Overrides: change a few settings of a recipe by name (``--set`` on the CLI, the API's
``overrides``).

A key is a setting's vocabulary name when no other section uses it (``lr``,
``n_samples_per_prompt``) or its dotted path (``optimiser.lr``); ``rewards`` names the whole list.
Values may be typed already (the API's JSON) or text (the CLI): text aimed at a setting that is not
text is parsed as JSON, so ``rewards=[{"name": "color", "weight": 1}]`` and
``sde_window_range=[0, 4]`` work, and an empty text unsets an optional setting.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from engine.problems import Problem, RecipeError
from engine.recipe import RETIRED, Recipe, printable


def _settings() -> dict[str, Any]:
    """Every overridable dotted path and its type."""
    paths: dict[str, Any] = {}
    for section, hint in get_type_hints(Recipe).items():
        if is_dataclass(hint) and isinstance(hint, type):
            leaf_hints = get_type_hints(hint)
            for leaf in fields(hint):
                paths[f"{section}.{leaf.name}"] = leaf_hints[leaf.name]
        else:
            paths[section] = hint
    return paths


def vocabulary() -> dict[str, str]:
    """Each short name that identifies one setting, mapped to its dotted path."""
    owners: dict[str, list[str]] = {}
    for path in _settings():
        owners.setdefault(path.rpartition(".")[2], []).append(path)
    return {name: paths[0] for name, paths in owners.items() if len(paths) == 1}


def resolve_key(key: str) -> str:
    """The dotted path a key names; raises ``RecipeError`` with the fix when it names none."""
    settings = _settings()
    if key in settings:
        return key
    shown = printable(key)
    retired = [path for path in RETIRED if key in (path, path.rpartition(".")[2])]
    if retired:
        raise RecipeError(
            [Problem(shown, f"{retired[0]} is not a recipe setting: {RETIRED[retired[0]]}")]
        )
    short = vocabulary()
    if key in short:
        return short[key]
    in_section = [path for path in settings if path.startswith(f"{key}.")]
    if in_section:
        raise RecipeError(
            [
                Problem(
                    shown,
                    f"'{shown}' is a section, not a setting: set one of its settings, "
                    f"e.g. {in_section[0]}",
                )
            ]
        )
    owners = [path for path in settings if path.rpartition(".")[2] == key]
    if owners:
        fix = f"'{shown}' is in several sections: use {' or '.join(owners)}"
    else:
        close = difflib.get_close_matches(shown, [*short, *settings], n=1)
        fix = (
            f"did you mean '{close[0]}'?"
            if close
            else ("use a setting's name (n_samples_per_prompt) or its dotted path (optimiser.lr)")
        )
    raise RecipeError([Problem(shown, f"no setting is named '{shown}': {fix}")])


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Split CLI ``key=value`` items; raises ``RecipeError`` for items without ``=``."""
    result: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(item, f"'{item}' is not key=value: e.g. lr=3e-4"))
        else:
            result[key.strip()] = value
    if problems:
        raise RecipeError(problems)
    return result


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """A copy of ``recipe`` with ``overrides`` applied (not validated: call ``validate()``).

    Raises ``RecipeError`` listing every unknown key and every value of the wrong type.
    """
    settings = _settings()
    data = recipe.to_dict()
    problems: list[Problem] = []
    for key, value in overrides.items():
        try:
            path = resolve_key(key)
        except RecipeError as error:
            problems.extend(error.problems)
            continue
        if isinstance(value, str):
            value = _parse_text(value, settings[path])
        section, _, name = path.partition(".")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    if problems:
        raise RecipeError(problems)
    return Recipe.from_dict(data)


def _parse_text(text: str, hint: Any) -> Any:
    """Read CLI text for a setting of type ``hint``; text the type rejects stays text."""
    optional = get_origin(hint) in (Union, types.UnionType)
    inner = next(arg for arg in get_args(hint) if arg is not type(None)) if optional else hint
    if inner is str:
        return text
    if optional and not text.strip():
        return None
    if inner is bool and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        # Left as text, the setting's type check then names the field (too deep is not a value).
        return text
