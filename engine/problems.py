"""Problems found in a recipe, and the error that carries them.

Every check (parsing, overrides, validation) reports problems the same way so that the form, the
REST API and the CLI can show each one beside its field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe.

    ``field`` is the dotted path of the offending setting (``layout.diffusion_microgroup_size``);
    ``message`` names the setting and its value, says what is wrong and how to fix it.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RecipeError(ValueError):
    """Raised when a recipe cannot be built or used; ``problems`` lists every reason at once."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def or_list(values: Iterable[object]) -> str:
    """Join values as prose for a fix: ``1, 2, 4, 8 or 16``."""
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"
