"""Prompt sets from inline lists, text and JSONL files and Flow-GRPO folders; seeded draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.problems import RecipeError
from engine.prompts import PromptSet, draw_prompts, load_prompts
from engine.recipe import DataConfig


def test_inline_prompts_and_eval_fallback() -> None:
    assert load_prompts(DataConfig(prompts=("a", "b"))) == PromptSet(("a", "b"), ("a", "b"))
    assert load_prompts(DataConfig(prompts=("a",), eval_prompts=("z",))).eval == ("z",)
    with pytest.raises(RecipeError, match=r"data.prompts"):
        load_prompts(DataConfig(prompts=()))


def test_flow_grpo_folder(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text('a sign that says "hi"\n\n  a mug  \n')
    (tmp_path / "test.jsonl").write_text('{"prompt": "held out"}\n\n')
    prompts = load_prompts(DataConfig(dataset=str(tmp_path)))
    assert prompts == PromptSet(('a sign that says "hi"', "a mug"), ("held out",))


def test_relative_file_resolves_against_root(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    prompts = load_prompts(DataConfig(dataset="p.jsonl"), root=tmp_path)
    assert prompts.train == ("one", "two") and prompts.eval == ("one", "two")


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({}, "has no train.txt or train.jsonl"),
        ({"train.txt": "\n \n"}, "holds no prompts"),
        ({"train.jsonl": '{"prompt": 1}'}, 'line 1 has no "prompt" string'),
        ({"train.jsonl": "nope"}, "line 1 is not JSON"),
    ],
)
def test_bad_datasets_name_the_setting(
    tmp_path: Path, files: dict[str, str], fragment: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_prompts(DataConfig(dataset=str(tmp_path)))
    (problem,) = caught.value.problems
    assert problem.field == "data.dataset" and fragment in problem.message


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"does not exist: fix data.dataset"):
        load_prompts(DataConfig(dataset=str(tmp_path / "missing.txt")))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(RecipeError, match=r"cannot be read as UTF-8"):
        load_prompts(DataConfig(dataset=str(tmp_path / "latin1.txt")))


def test_draws_are_seeded() -> None:
    prompts = ("a", "b", "c", "d")
    first = draw_prompts(prompts, 123, 4)
    assert first == draw_prompts(prompts, 123, 4)
    assert sorted(first) == ["a", "b", "c", "d"], "no repeats while the set is large enough"
    assert len(draw_prompts(prompts, 5, 9)) == 9
    assert {tuple(draw_prompts(prompts, seed, 4)) for seed in range(20)} != {tuple(first)}
