"""What a recipe may not hold: a program to run, sizes past what the product fits, text UTF-8
cannot store. Each is a field error, from the engine (form, API and CLI all call it)."""

from __future__ import annotations

import io
import json
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.cli.main import EXIT_INVALID, main
from engine.layout import layout
from engine.overrides import apply_overrides
from engine.problems import RecipeError
from engine.recipe import RETIRED, Recipe, drop_retired, field_docs, settings
from engine.validation import validate


def problems_of(data: dict[str, Any]) -> dict[str, str]:
    """{field: message} of building and validating ``data`` (one message per field here)."""
    found = all_problems(data)
    assert all(len(messages) == 1 for messages in found.values()), found
    return {field: messages[0] for field, messages in found.items()}


def all_problems(data: dict[str, Any]) -> dict[str, list[str]]:
    """{field: [message, ...]} of building and validating ``data``."""
    try:
        problems = validate(Recipe.from_dict(data))
    except RecipeError as error:
        problems = list(error.problems)
    found: dict[str, list[str]] = {}
    for problem in problems:
        found.setdefault(problem.field, []).append(problem.message)
    return found


RETIRED_MESSAGE = (
    "rollout.server_command is not a recipe setting: the colocated server's command is the "
    "worker host's to configure, never a recipe's (it runs as the worker): an administrator sets "
    "GROUPWISE_ROLLOUT_SERVER_COMMAND on the worker (docs/deploy.md); remove this setting from "
    "the recipe"
)


def test_a_recipe_cannot_name_the_server_command() -> None:
    found = problems_of(
        {"rollout": {"backend": "sglang", "launch": "colocated", "server_command": "sh -c id"}}
    )
    assert found == {"rollout.server_command": RETIRED_MESSAGE}


@pytest.mark.parametrize("key", ["server_command", "rollout.server_command"])
def test_an_override_cannot_name_it_either(key: str) -> None:
    with pytest.raises(RecipeError) as raised:
        apply_overrides(Recipe(), {key: "sh -c id"})
    assert [(p.field, p.message) for p in raised.value.problems] == [(key, RETIRED_MESSAGE)]


def test_the_cli_refuses_it(tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text(json.dumps({"rollout": {"server_command": "touch pwned"}}))
    out = io.StringIO()
    assert main(["validate", str(recipe_file)], out=out) == EXIT_INVALID
    assert f"rollout.server_command: {RETIRED_MESSAGE}" in out.getvalue()
    out = io.StringIO()
    assert main(["validate", "--preset", "tiny-color", "--set", "server_command=x"], out=out) == 2
    assert RETIRED_MESSAGE in out.getvalue()


def test_no_setting_names_a_program_any_more() -> None:
    # Every text setting is a choice, a path under the data roots, a URL under the egress
    # policy, a reward name from the registry, or a prompt: docs/deploy.md lists them.
    text_settings = {path for path, leaf in settings() if "str" in str(leaf.type)}
    assert not any("command" in path for path in text_settings)
    assert set(RETIRED) == {"rollout.server_command"}


def test_old_records_are_read_without_the_retired_setting() -> None:
    old = Recipe().to_dict()
    old["rollout"]["server_command"] = "sglang serve"
    assert drop_retired(old) == Recipe().to_dict()
    assert "server_command" in old["rollout"]  # the input is left as it was


def _bounded() -> list[tuple[str, str, int]]:
    """(dotted path, bound kind, bound) of every bounded setting of a section."""
    return [
        (path, kind, leaf.metadata[kind])
        for path, leaf in settings()
        if "." in path and not path.startswith("rewards[]")
        for kind in ("most", "items", "chars")
        if kind in leaf.metadata
    ]


def _past(path: str, kind: str, bound: int) -> tuple[Any, str]:
    """A value just past the bound, and the field its problem names."""
    urls = path == "rollout.server_urls"
    if kind == "items":
        return (
            [f"http://gpu{i}:1" for i in range(bound + 1)] if urls else ["a"] * (bound + 1)
        ), path
    if kind == "chars" and path.startswith(("data.prompts", "data.eval_prompts", "rollout.")):
        return ["http://" + "a" * bound if urls else "a" * (bound + 1)], f"{path}[0]"
    if kind == "chars":
        return "a" * (bound + 1), path
    if path == "sampler.sde_window_range":
        return [0, bound + 1], f"{path}[1]"
    # Image sides stay multiples of the tiny model's 4 px patches.
    return bound + (4 if path.startswith(("sampler.height", "sampler.width")) else 1), path


@pytest.mark.parametrize(("path", "kind", "bound"), _bounded())
def test_every_bound_is_a_field_error_one_past_it(path: str, kind: str, bound: int) -> None:
    section, name = path.split(".")
    value, field = _past(path, kind, bound)
    found = all_problems({section: {name: value}})
    assert field in found, found
    assert any(f"at most {bound:,}" in message for message in found[field]), found[field]
    # The field's help says its bound too.
    assert f"at most {bound:,}" in field_docs()[path]


def test_rewards_are_bounded_in_count_and_text() -> None:
    many = [{"name": f"r{i}"} for i in range(17)]
    assert problems_of({"rewards": many})["rewards"] == (
        "rewards lists 17 items; at most 16 fit: remove some"
    )
    found = all_problems({"rewards": [{"name": "ocr", "path": "p" * 4097}]})
    assert found["rewards[0].path"] == [
        "path is 4,097 characters long; at most 4,096 fit: shorten it"
    ]


def test_bounds_are_inclusive() -> None:
    assert problems_of({"run": {"max_steps": 1_000_000, "checkpoint_every": 0}}) == {}
    assert problems_of({"run": {"max_steps": 1_000_001}}) == {
        "run.max_steps": "max_steps=1000001 is over 1,000,000: use at most 1,000,000"
    }


def test_integers_past_the_database_are_field_errors() -> None:
    # 2^63 would not fit SQLite's integer, 2^31 not PostgreSQL's run.max_steps column.
    for value in (2**31, 2**63):
        assert set(problems_of({"run": {"max_steps": value}})) == {"run.max_steps"}


def test_an_absurd_layout_is_refused_in_constant_time_and_memory() -> None:
    huge = {
        "layout": {
            "rollout_batch_size": 10**9,
            "n_samples_per_prompt": 10**9,
            "diffusion_microgroup_size": 7,
            "num_steps_per_rollout": 10**9 + 1,
        },
        "sampler": {"sde_window_size": 10**9, "num_inference_steps": 10**9},
        "run": {"max_steps": 2**63},
    }
    recipe = Recipe.from_dict(huge)
    tracemalloc.start()
    try:
        found = {p.field for p in validate(recipe)}
        with pytest.raises(RecipeError):
            layout(recipe)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Before bounds, this layout built every seed and divisor list: 23 GB until killed.
    assert peak < 2_000_000
    assert {
        "layout.rollout_batch_size",
        "layout.n_samples_per_prompt",
        "layout.num_steps_per_rollout",
        "sampler.sde_window_size",
        "sampler.num_inference_steps",
        "run.max_steps",
    } <= found


def test_the_largest_valid_layout_holds_no_per_sample_list() -> None:
    recipe = apply_overrides(
        Recipe(),
        {
            "rollout_batch_size": 1024,
            "n_samples_per_prompt": 256,
            "diffusion_microgroup_size": 256,
            "micro_batch_size_sample": 1024,
            "num_steps_per_rollout": 256,
            "max_steps": 256,
            "checkpoint_every": 256,
            "eval_every": 256,
        },
    )
    derived = layout(recipe)
    # 1024 x 256 samples; the layout carries the first group's seeds, not all 262,144.
    assert derived.samples_per_rollout == 262_144
    assert len(derived.to_dict()["first_group_seeds"]) == 256
    assert derived.group_seeds(1023)[255] == (42 + 1023 * 256 + 255) % 2**31


def test_a_lone_surrogate_is_a_field_error() -> None:
    found = problems_of({"data": {"prompts": ["a red image", "\ud800 red"]}})
    assert list(found) == ["data.prompts[1]"]
    message = found["data.prompts[1]"]
    assert message.startswith("data.prompts[1] holds a lone surrogate at character 0")
    # The message itself must be storable and printable.
    message.encode("utf-8")


def test_unknown_keys_with_surrogates_are_echoed_safely() -> None:
    found = problems_of({"\udcff": 1})
    (field,) = found
    field.encode("utf-8")
    found[field].encode("utf-8")


def test_nesting_too_deep_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError) as raised:
        Recipe.from_json("[" * 100_000 + "]" * 100_000)
    assert raised.value.problems[0].field == "recipe"


def test_a_recipe_file_with_a_surrogate_is_reported_by_the_cli(tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text('{"data": {"prompts": ["\\ud800 red"]}}')
    out = io.StringIO()
    assert main(["validate", str(recipe_file)], out=out) == EXIT_INVALID
    assert "data.prompts[0] holds a lone surrogate" in out.getvalue()


def test_replace_keeps_bounds_checkable() -> None:
    # Code that builds recipes directly (sweeps, tests) is held to the same bounds.
    recipe = replace(Recipe(), layout=replace(Recipe().layout, num_gpus=1025))
    assert {p.field for p in validate(recipe)} >= {"layout.num_gpus"}


def test_the_recipes_doc_lists_every_bound() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "recipes.md").read_text()
    for path, _kind, bound in [*_bounded(), ("rewards", "items", 16)]:
        (row,) = [line for line in doc.splitlines() if line.startswith(f"| `{path}` |")]
        assert f"at most {bound:,}" in row, row
