"""Prompt sets: where a run's training and evaluation prompts come from, and which a rollout draws.

``data.dataset`` names a text file (one prompt per line), a JSONL file (``{"prompt": ...}`` per
line), or a directory in Flow-GRPO's layout with ``train`` and ``test`` files of either kind.
Without a dataset the recipe's inline ``data.prompts`` (and ``data.eval_prompts``) are used. An
empty or unreadable dataset is a ``RecipeError`` naming ``data.dataset``, raised before any
compute.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from engine.problems import Problem, RecipeError
from engine.recipe import DataConfig, unencodable


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run."""

    #: Prompts rollouts draw from.
    train: tuple[str, ...]
    #: Held-out prompts evaluation samples, in order.
    eval: tuple[str, ...]


def load_prompts(data: DataConfig, root: Path | None = None) -> PromptSet:
    """The run's prompts; relative dataset paths resolve against ``root`` (default: cwd)."""
    if not data.dataset:
        train = tuple(data.prompts)
        if not train:
            raise RecipeError([Problem("data.prompts", "no prompts: add some or set data.dataset")])
        return PromptSet(train, tuple(data.eval_prompts) or train)
    path = Path(data.dataset)
    if not path.is_absolute() and root is not None:
        path = root / path
    if path.is_dir():
        train_file = _find(path, "train")
        test_file = _find(path, "test", required=False)
        train = _read(train_file)
        evaluation = _read(test_file) if test_file else ()
    else:
        train, evaluation = _read(path), ()
    return PromptSet(train, tuple(data.eval_prompts) or evaluation or train)


def draw_prompts(prompts: tuple[str, ...], rollout_seed: int, count: int) -> list[str]:
    """``count`` prompts for one rollout, drawn from ``rollout_seed`` so a resumed run draws the
    same ones: without repetition while the set is large enough, with it otherwise."""
    rng = random.Random(rollout_seed)
    if count <= len(prompts):
        return rng.sample(list(prompts), count)
    return rng.choices(list(prompts), k=count)


def _find(folder: Path, stem: str, *, required: bool = True) -> Path | None:
    for suffix in (".txt", ".jsonl"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise RecipeError(
            [Problem("data.dataset", f"{folder} has no {stem}.txt or {stem}.jsonl: add one")]
        )
    return None


def _read(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecipeError(
            [Problem("data.dataset", f"{path} does not exist: fix data.dataset")]
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(
            [Problem("data.dataset", f"{path} cannot be read as UTF-8 text: {error}")]
        ) from None
    prompts = parse_prompt_text(text, jsonl=path.suffix == ".jsonl", source=str(path))
    if not prompts:
        raise RecipeError([Problem("data.dataset", f"{path} holds no prompts")])
    return prompts


def parse_prompt_text(
    text: str, *, jsonl: bool, source: str, field: str = "data.dataset"
) -> tuple[str, ...]:
    """The prompts of a prompt file's text: one per line, or ``{"prompt": ...}`` per JSONL line.

    Raises ``RecipeError`` under ``field``, naming ``source`` (if any) and the line, for one that is
    not JSON (or nests too deeply to parse), has no ``"prompt"`` string, or holds a lone
    surrogate (JSON's ``\\ud800`` escape), which no UTF-8 record of the run could store.
    """
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        prompt, problem = _jsonl_prompt(line) if jsonl else (line, None)
        if problem is None and unencodable(prompt or "") is not None:
            problem = "holds a lone surrogate, which is not text: write the character it stands for"
        if problem is not None:
            where = f"{source} line {number}" if source else f"line {number}"
            raise RecipeError([Problem(field, f"{where} {problem}")])
        assert prompt is not None
        prompts.append(prompt.strip())
    return tuple(prompts)


def _jsonl_prompt(line: str) -> tuple[str | None, str | None]:
    """The prompt of one JSONL line, or None and what is wrong with the line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, f"is not JSON: {error.msg}"
    except RecursionError:
        return None, "nests too deeply to be a prompt record"
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        return None, 'has no "prompt" string'
    return record["prompt"], None
