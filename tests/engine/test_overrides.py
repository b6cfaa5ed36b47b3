"""Overrides by vocabulary name or dotted path, with text values parsed as JSON."""

import re

import pytest

import engine.overrides as overrides_module
from engine.overrides import apply_overrides, parse_assignments, resolve_key, vocabulary
from engine.problems import RecipeError
from engine.recipe import Recipe, RewardSpec


def test_vocabulary_names_map_to_their_section():
    names = vocabulary()
    assert names["lr"] == "optimiser.lr"
    assert names["n_samples_per_prompt"] == "layout.n_samples_per_prompt"
    assert names["sde_window_range"] == "sampler.sde_window_range"
    assert names["rewards"] == "rewards"
    assert names["seed"] == "run.seed"


def test_short_name_and_dotted_path_set_the_same_setting():
    assert apply_overrides(Recipe(), {"lr": 3e-4}) == apply_overrides(
        Recipe(), {"optimiser.lr": 3e-4}
    )
    assert apply_overrides(Recipe(), {"lr": 3e-4}).optimiser.lr == 3e-4


def test_cli_text_is_parsed_by_the_setting_type():
    recipe = apply_overrides(
        Recipe(),
        parse_assignments(
            [
                "lr=3e-4",
                "n_samples_per_prompt=8",
                "sde_window_range=[1, 3]",
                "globalize_reward_std=False",
                'rewards=[{"name": "color", "weight": 0.5}, {"name": "color_pixel"}]',
                "model.path=/models/tiny",
                "sde_type=cps",
                'prompts=["a red image", "a blue image"]',
            ]
        ),
    )
    assert recipe.optimiser.lr == 3e-4
    assert recipe.layout.n_samples_per_prompt == 8
    assert recipe.sampler.sde_window_range == (1, 3)
    assert recipe.optimiser.globalize_reward_std is False
    assert recipe.rewards == (RewardSpec("color", 0.5), RewardSpec("color_pixel", 1.0))
    assert recipe.model.path == "/models/tiny"
    assert recipe.sampler.sde_type == "cps"
    assert recipe.data.prompts == ("a red image", "a blue image")


def test_text_that_looks_like_json_stays_text_for_text_settings():
    recipe = apply_overrides(Recipe(), {"path": "123", "dataset": "null"})
    assert recipe.model.path == "123"
    assert recipe.data.dataset == "null"


def test_empty_text_unsets_an_optional_setting():
    recipe = apply_overrides(Recipe(), {"global_batch_size": "16"})
    assert recipe.layout.global_batch_size == 16
    assert apply_overrides(recipe, {"global_batch_size": ""}).layout.global_batch_size is None
    assert apply_overrides(recipe, {"global_batch_size": "null"}).layout.global_batch_size is None


def test_the_original_recipe_is_untouched():
    recipe = Recipe()
    apply_overrides(recipe, {"lr": 0.5})
    assert recipe.optimiser.lr == Recipe().optimiser.lr


def test_every_bad_key_and_value_is_reported_at_once():
    with pytest.raises(RecipeError) as caught:
        apply_overrides(
            Recipe(), {"learning_rate": 1.0, "optimiser.lrr": 1.0, "lr": "fast", "model": "x"}
        )
    found = {p.field: p.message for p in caught.value.problems}
    assert found == {
        "learning_rate": "no setting is named 'learning_rate': use a setting's name "
        "(n_samples_per_prompt) or its dotted path (optimiser.lr)",
        "optimiser.lrr": "no setting is named 'optimiser.lrr': did you mean 'optimiser.lr'?",
        "model": "'model' is a section, not a setting: set one of its settings, e.g. model.family",
    }
    # Bad values surface once the keys are right.
    message = 'optimiser.lr must be a number, not str "fast"'
    with pytest.raises(RecipeError, match=re.escape(message)):
        apply_overrides(Recipe(), {"lr": "fast"})


def test_a_name_in_two_sections_needs_its_dotted_path(monkeypatch):
    settings = overrides_module._settings()
    monkeypatch.setattr(overrides_module, "_settings", lambda: {**settings, "run.lr": float})
    message = "'lr' is in several sections: use optimiser.lr or run.lr"
    with pytest.raises(RecipeError, match=re.escape(message)):
        resolve_key("lr")
    assert resolve_key("optimiser.lr") == "optimiser.lr"


def test_parse_assignments_splits_on_the_first_equals_sign():
    assert parse_assignments(["dataset=a=b", " lr =1"]) == {"dataset": "a=b", "lr": "1"}
    with pytest.raises(RecipeError) as caught:
        parse_assignments(["lr", "=3"])
    assert [p.message for p in caught.value.problems] == [
        "'lr' is not key=value: e.g. lr=3e-4",
        "'=3' is not key=value: e.g. lr=3e-4",
    ]
