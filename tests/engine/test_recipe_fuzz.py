"""Property tests: whatever a form, an API call or a file holds, reading a recipe gives a recipe
or a list of field errors (RecipeError), never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.layout import layout
from engine.overrides import apply_overrides, vocabulary
from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.validation import validate

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SECTIONS = ("model", "data", "rewards", "layout", "sampler", "optimiser", "run", "bogus")
SETTINGS = [*sorted(vocabulary()), "optimiser.lr", "layout.num_gpus", "rewards", "nope", "model"]
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _survives(build: Any) -> None:
    try:
        recipe = build()
    except RecipeError as error:
        assert error.problems and all(p.field and p.message for p in error.problems)
        return
    problems = validate(recipe)
    assert all(p.field and p.message for p in problems)
    if not problems:
        layout(recipe)
        assert Recipe.from_json(recipe.to_json()) == recipe


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS), JSON, max_size=5))
def test_any_nested_data(data: dict[str, Any]) -> None:
    _survives(lambda: Recipe.from_dict(data))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(SETTINGS), JSON | st.text(max_size=20) | st.integers(-5, 70), max_size=6
    )
)
def test_any_overrides(overrides: dict[str, Any]) -> None:
    _survives(lambda: apply_overrides(Recipe(), overrides))
