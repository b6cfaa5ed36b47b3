"""The one recipe validator: every rule, every problem at once, each naming its field and fix.

The form, the REST API and the CLI all call ``validate``; none re-implements a rule. Rules that
depend on a setting another rule rejected are skipped, so one mistake is reported once rather
than echoed by every rule downstream of it. The rules live by section: ``bounds`` (checked
first), ``batching`` (the layout), ``sampling``, ``sections`` (the others, and the memory plan);
``paths`` holds the checks that run where the recipe runs, ``arithmetic`` the divisors and
multiples the fixes suggest.
"""

from __future__ import annotations

from engine.problems import Problem
from engine.recipe import Recipe
from engine.validation.arithmetic import divisors
from engine.validation.batching import check_layout
from engine.validation.bounds import bound_problems
from engine.validation.paths import check_paths
from engine.validation.sampling import check_sampler
from engine.validation.sections import (
    check_data,
    check_memory,
    check_model,
    check_optimiser,
    check_rewards,
    check_rollout,
    check_run,
)

__all__ = ["bound_problems", "check_paths", "divisors", "validate"]


def validate(recipe: Recipe) -> list[Problem]:
    """Return every problem with ``recipe`` (empty when it is valid), in section order."""
    problems = bound_problems(recipe)
    # The layout's rules list divisors and ranges of these numbers: cheap only within bounds.
    within_bounds = not any(p.field.startswith(("layout.", "sampler.")) for p in problems)
    check_model(recipe, problems)
    check_data(recipe, problems)
    check_rewards(recipe, problems)
    if within_bounds:
        check_layout(recipe, problems)
    check_sampler(recipe, problems, within_bounds)
    check_optimiser(recipe, problems)
    check_run(recipe, problems)
    check_rollout(recipe, problems)
    check_memory(recipe, problems)
    return problems
