"""Creating a microgroup sweep from the web: check the request, store it, enqueue it.

The measuring is the engine's (``engine.sweep``), done in a worker by ``webapp.sweeps.measuring``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from engine.problems import Problem, RecipeError
from engine.recipe import Recipe
from engine.sweep import sweep_sizes
from webapp.runs.models import Run
from webapp.runs.quota import check_creation_rate
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
    """Store a queued sweep and enqueue it once committed; ``RecipeError`` for bad arguments,
    ``RateLimited`` when the owner has launched ``GROUPWISE_SWEEP_CREATE_LIMIT`` lately (counted
    with the owner's row locked, as runs are)."""
    if rollouts > MAX_ROLLOUTS:
        raise RecipeError([Problem("rollouts", f"rollouts={rollouts}: use 1 to {MAX_ROLLOUTS}")])
    chosen = sweep_sizes(recipe, sizes, rollouts)
    with transaction.atomic():
        list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk"))
        check_creation_rate(
            Sweep.objects.filter(owner=owner),
            settings.GROUPWISE_SWEEP_CREATE_LIMIT,
            noun="sweeps",
            setting="GROUPWISE_SWEEP_CREATE_LIMIT",
        )
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
