"""Where user input may touch the filesystem: recipe paths and run media.

A recipe submitted from the web may name directories on the worker (``data.dataset``,
``model.path``, ``rewards[i].path``). Those must resolve, symlinks followed, inside one of
``GROUPWISE_DATA_ROOTS``; otherwise a user could read any text file on the worker in as prompts
and see it on the dashboard. A media URL's path must stay inside its run's media folder.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from engine.problems import Problem
from engine.recipe import Recipe


def recipe_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, value) of every filesystem path the recipe sets."""
    named = [("model.path", recipe.model.path), ("data.dataset", recipe.data.dataset)]
    named += [(f"rewards[{i}].path", spec.path) for i, spec in enumerate(recipe.rewards)]
    return [(field, value) for field, value in named if value]


def path_problems(recipe: Recipe) -> list[Problem]:
    """A problem per recipe path outside ``GROUPWISE_DATA_ROOTS``."""
    roots: list[Path] = settings.GROUPWISE_DATA_ROOTS
    allowed = ", ".join(str(root) for root in roots) or "none"
    problems = []
    for field, value in recipe_paths(recipe):
        try:
            resolved = (Path(settings.BASE_DIR) / value).resolve()
        except (OSError, ValueError):
            problems.append(Problem(field, f"{value!r} is not a usable path: fix {field}"))
            continue
        if not any(resolved.is_relative_to(root) for root in roots):
            problems.append(
                Problem(
                    field,
                    f"{value} is outside the directories runs may read ({allowed}): put the "
                    "files under one of them, or have the admin add a directory to "
                    "GROUPWISE_DATA_ROOTS",
                )
            )
    return problems


def run_media_file(run_id: int, path: str) -> Path | None:
    """The file ``path`` names inside run ``run_id``'s media folder, or None.

    None for ``..``, ``.`` or empty segments, absolute paths, backslashes and NUL bytes, and for
    anything that resolves (through symlinks) outside the folder or is not a regular file.
    """
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
    ):
        return None
    folder = (Path(settings.MEDIA_ROOT) / "runs" / str(run_id)).resolve()
    try:
        target = folder.joinpath(*parts).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(folder) or not target.is_file():
        return None
    return target
