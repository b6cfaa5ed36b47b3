"""The upper bounds each recipe field declares (``engine.recipe._setting``), checked first:
within them every other rule is cheap."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from engine.problems import Problem
from engine.recipe import Recipe


def bound_problems(recipe: Recipe) -> list[Problem]:
    """Every setting beyond the upper bound its field declares (``engine.recipe._setting``).

    Each bound fits what the product can run (and what its database columns hold); checking
    them first keeps every other rule cheap whatever the values are.
    """
    problems: list[Problem] = []
    sections: list[tuple[str, Any]] = [(f.name, getattr(recipe, f.name)) for f in fields(recipe)]
    sections += [(f"rewards[{i}]", spec) for i, spec in enumerate(recipe.rewards)]
    for prefix, section in sections:
        if not is_dataclass(section):
            continue
        for leaf in fields(section):
            _bound(f"{prefix}.{leaf.name}", getattr(section, leaf.name), leaf.metadata, problems)
    rewards = next(f for f in fields(recipe) if f.name == "rewards")
    _bound("rewards", recipe.rewards, rewards.metadata, problems)
    return problems


def _bound(path: str, value: Any, limits: Mapping[str, Any], problems: list[Problem]) -> None:
    name = path.rpartition(".")[2]
    most, items, chars = limits.get("most"), limits.get("items"), limits.get("chars")
    if items is not None and len(value) > items:
        problems.append(
            Problem(path, f"{name} lists {len(value):,} items; at most {items:,} fit: remove some")
        )
        return
    values = value if isinstance(value, tuple) else (value,)
    for index, item in enumerate(values):
        where = f"{path}[{index}]" if isinstance(value, tuple) else path
        if most is not None and isinstance(item, int | float) and item > most:
            leaf = where.rpartition(".")[2]
            problems.append(Problem(where, f"{leaf}={item} is over {most:,}: use at most {most:,}"))
        elif chars is not None and isinstance(item, str) and len(item) > chars:
            problems.append(
                Problem(
                    where,
                    f"{where.rpartition('.')[2]} is {len(item):,} characters long; at most "
                    f"{chars:,} fit: shorten it",
                )
            )
