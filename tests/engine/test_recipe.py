"""The recipe's shape: defaults, parsing, round trips and help text."""

import json
from dataclasses import fields, replace
from typing import get_type_hints

import pytest

from engine.presets import PRESETS
from engine.problems import RecipeError
from engine.recipe import LayoutConfig, ModelConfig, Recipe, RewardSpec, field_docs
from engine.validation import validate


def test_defaults_are_a_valid_recipe():
    assert validate(Recipe()) == []


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_dict_json_and_toml(name):
    recipe = PRESETS[name].recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_toml(recipe.to_toml()) == recipe


def test_toml_round_trip_keeps_unset_and_set_optionals():
    recipe = replace(
        Recipe(),
        model=ModelConfig(family="sd3", path="/models/sd35"),
        layout=replace(Recipe().layout, global_batch_size=16),
        rewards=(RewardSpec("color", 0.5), RewardSpec("color_pixel", 2.0)),
    )
    again = Recipe.from_toml(recipe.to_toml())
    assert again == recipe
    assert again.model.path == "/models/sd35"
    # None has no TOML form: it is left out and comes back as the default, None.
    assert "path" not in Recipe().to_toml()
    assert Recipe.from_toml(Recipe().to_toml()).model.path is None


def test_to_dict_is_plain_json_data():
    data = Recipe().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["sampler"]["sde_window_range"] == [0, 4]
    assert data["rewards"] == [{"name": "color", "weight": 1.0, "path": None}]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_and_load_by_suffix(tmp_path, suffix):
    recipe = PRESETS["ocr-sd35"].recipe
    path = tmp_path / f"run{suffix}"
    recipe.save(path)
    assert Recipe.load(path) == recipe


def test_save_and_load_reject_other_suffixes(tmp_path):
    with pytest.raises(RecipeError, match=r"neither \.toml nor \.json"):
        Recipe().save(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("{}")
    with pytest.raises(RecipeError, match=r"neither \.toml nor \.json"):
        Recipe.load(tmp_path / "run.yaml")


def test_missing_settings_take_defaults():
    recipe = Recipe.from_dict({"layout": {"n_samples_per_prompt": 8}})
    assert recipe.layout == LayoutConfig(n_samples_per_prompt=8)
    assert recipe.model == ModelConfig()


def test_numbers_are_converted_where_unambiguous():
    recipe = Recipe.from_dict({"optimiser": {"lr": 1}, "layout": {"n_samples_per_prompt": 16.0}})
    assert recipe.optimiser.lr == 1.0 and isinstance(recipe.optimiser.lr, float)
    assert recipe.layout.n_samples_per_prompt == 16
    assert isinstance(recipe.layout.n_samples_per_prompt, int)


def test_blank_optional_settings_mean_unset():
    recipe = Recipe.from_dict({"model": {"path": ""}, "layout": {"global_batch_size": ""}})
    assert recipe.model.path is None
    assert recipe.layout.global_batch_size is None


def test_parsing_reports_every_shape_problem_at_once():
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict(
            {
                "optimiser": {"lr": "fast", "kl_betta": 0.1},
                "layout": {"n_samples_per_prompt": 2.5},
                "sampler": {"sde_window_range": [0, 1, 2], "guidance_scale": True},
                "rewards": [{"name": "color", "weight": "heavy"}],
                "data": "prompts.txt",
                "extra": {},
            }
        )
    problems = {p.field: p.message for p in caught.value.problems}
    assert problems == {
        "optimiser.kl_betta": "optimiser has no setting 'kl_betta': did you mean 'kl_beta'?",
        "optimiser.lr": 'optimiser.lr must be a number, not str "fast"',
        "layout.n_samples_per_prompt": (
            "layout.n_samples_per_prompt must be a whole number, not float 2.5"
        ),
        "sampler.sde_window_range": (
            "sampler.sde_window_range must have 2 items, not 3: e.g. [0, 4]"
        ),
        "sampler.guidance_scale": "sampler.guidance_scale must be a number, not bool true",
        "rewards[0].weight": 'rewards[0].weight must be a number, not str "heavy"',
        "data": 'data must be a table of settings, not str "prompts.txt"',
        "extra": (
            "recipe has no setting 'extra': use one of model, data, rewards, layout, sampler, "
            "optimiser, run, rollout"
        ),
    }
    assert str(caught.value).count("\n") == len(problems) - 1


def test_lists_must_be_lists():
    with pytest.raises(RecipeError, match=r"data\.prompts must be a list, not str"):
        Recipe.from_dict({"data": {"prompts": "a red image"}})


def test_malformed_text_is_a_recipe_error():
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.from_json("{")
    with pytest.raises(RecipeError, match="not valid TOML"):
        Recipe.from_toml("[model")


def test_every_setting_has_one_line_of_help():
    docs = field_docs()
    for section in fields(Recipe):
        assert section.name in docs
    assert docs["optimiser.lr"] == "AdamW learning rate"
    assert docs["rewards[].weight"] == "weight in the summed reward (>= 0)"
    hints = get_type_hints(Recipe)
    expected = sum(len(fields(hints[s.name])) for s in fields(Recipe) if s.name != "rewards")
    leaves = [key for key in docs if "." in key and not key.startswith("rewards[]")]
    assert len(leaves) == expected
    assert all(doc and "\n" not in doc for doc in docs.values())
