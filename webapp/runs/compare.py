"""What differs between the recipes of runs being compared."""

from __future__ import annotations

import json
from typing import Any

from engine.recipe import flatten


def recipe_differences(recipes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dotted setting whose value is not the same in every recipe:
    ``{"field": path, "values": [value as text, one per recipe]}``, in path order."""
    flat = [flatten(recipe) for recipe in recipes]
    keys = sorted(set().union(*flat))
    rows = []
    for key in keys:
        values = [json.dumps(f.get(key)) for f in flat]
        if len(set(values)) > 1:
            rows.append({"field": key, "values": values})
    return rows
