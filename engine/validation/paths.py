"""Rules run where the recipe runs: its local paths exist (the model, the dataset) and parse."""

from __future__ import annotations

from pathlib import Path

from engine.problems import Problem, RecipeError
from engine.prompts import load_prompts
from engine.recipe import Recipe
from engine.rewards.ocr import unquoted_prompts
from engine.rewards.registry import reward_entry, reward_names, reward_path


def check_paths(recipe: Recipe, root: str | Path | None = None) -> list[Problem]:
    """Problems with the recipe's local paths, on the machine that will run it.

    Separate from ``validate`` because the web server need not see the GPU host's disks: call it
    where the run executes. Relative paths resolve against ``root`` (default: the working
    directory). Nothing is ever downloaded, so every weight and prompt file must be here.
    """
    base = Path.cwd() if root is None else Path(root)
    problems: list[Problem] = []
    model = recipe.model
    if model.path is None:
        if model.family != "tiny":
            problems.append(
                Problem(
                    "model.path",
                    f"model.path is empty but family='{model.family}' has no built-in weights: "
                    "set it to the local diffusers directory",
                )
            )
    elif not (base / model.path).is_dir():
        problems.append(
            Problem("model.path", f"model.path='{model.path}' is not a directory: fix the path")
        )
    if recipe.data.dataset is not None:
        problems.extend(_dataset_problems(recipe, base))
    known = reward_names()
    for index, spec in enumerate(recipe.rewards):
        if spec.name not in known or not reward_entry(spec.name).needs_path:
            continue
        where = f"rewards[{index}].path"
        path = reward_path(spec.name, spec.path)
        if not path:
            problems.append(
                Problem(
                    where,
                    f"{where} is empty but '{spec.name}' loads its model from a local "
                    "directory: set it",
                )
            )
        elif not (base / path).is_dir():
            problems.append(Problem(where, f"{where}='{path}' is not a directory: fix the path"))
    return problems


def _dataset_problems(recipe: Recipe, base: Path) -> list[Problem]:
    """A dataset that cannot be read, or whose prompts the OCR reward cannot score."""
    try:
        prompts = load_prompts(recipe.data, base)
    except RecipeError as error:
        return list(error.problems)
    if not any(spec.name == "ocr" for spec in recipe.rewards):
        return []
    # Evaluation falls back to the training prompts: count each prompt once.
    every = list(dict.fromkeys(prompts.train + prompts.eval))
    missing = unquoted_prompts(every)
    if not missing:
        return []
    return [
        Problem(
            "data.dataset",
            f"{len(missing)} of {len(every)} prompts have no text in double quotes for the ocr "
            f"reward, e.g. {missing[0][1]!r}: quote the text to render",
        )
    ]
