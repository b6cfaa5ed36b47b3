"""Creating a microgroup sweep from the web: check the request, store it, enqueue it.

The measuring is the engine's (``engine.sweep``), done in a worker by ``webapp.sweeps.measuring``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from engine.problems import Problem, RecipeError
from engine.recipe import Recipe
from engine.sweep import sweep_sizes
from webapp.runs.models import Run
from webapp.sweeps.models import Sweep
from webapp.sweeps.tasks import run_sweep

#: Rollouts per size allowed from the web: a sweep is a measurement, not a run.
MAX_ROLLOUTS = 20


def create_sweep(
    owner: Any,
    recipe: Recipe,
    *,
    sizes: Sequence[int] | None = None,
    rollouts: int = 2,
    update: bool = False,
    run: Run | None = None,
) -> Sweep:
    """Store a queued sweep and enqueue it once committed; ``RecipeError`` for bad arguments."""
    if rollouts > MAX_ROLLOUTS:
        raise RecipeError([Problem("rollouts", f"rollouts={rollouts}: use 1 to {MAX_ROLLOUTS}")])
    chosen = sweep_sizes(recipe, sizes, rollouts)
    sweep = Sweep.objects.create(
        owner=owner,
        run=run,
        recipe=recipe.to_dict(),
        sizes=list(chosen),
        rollouts=rollouts,
        update=update,
    )
    sweep_id = sweep.pk
    transaction.on_commit(lambda: run_sweep.delay(sweep_id))
    return sweep
