"""The API's JSON parser: only what the engine and the database can hold gets past it.

DRF's own ``JSONParser`` lets two things through that failed later, as 500s. Text with a lone
surrogate (JSON's ``"\\ud800"`` escape) is a valid Python string that UTF-8 cannot encode: once
stored, every answer that includes it fails to render, for the owner and staff alike, until the
record is deleted. And nesting a thousand levels deep exhausts the recursion limit in the JSON
decoder. Both are refused here, before any view sees the body: a surrogate as a 400 under the
field that holds it, deep nesting as a 400 parse error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

from engine.recipe import printable, unencodable

#: Deepest nesting accepted; a recipe is 3 levels, an API body with a recipe 5.
MAX_DEPTH = 32


class StrictJSONParser(JSONParser):
    """``JSONParser`` that refuses lone surrogates and nesting deeper than ``MAX_DEPTH``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels") from None
        check_json(data)
        return data


def check_json(data: Any) -> None:
    """Raise ``ParseError`` for nesting past ``MAX_DEPTH`` and ``ValidationError`` under the
    field's path for the first text UTF-8 cannot encode; walks iteratively, so any depth the
    decoder produced is safe to inspect."""
    pending: list[tuple[str, Any, int]] = [("", data, 0)]
    while pending:
        path, value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(path or "body", value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                where = f"{path}.{printable(key)}" if path else printable(key)
                _check_text(where, key)
                pending.append((where, item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


def _check_text(path: str, text: str) -> None:
    bad = unencodable(text)
    if bad is not None:
        raise ValidationError(
            {
                path: [
                    f"{path} holds a lone surrogate at character {bad}, which is not text "
                    "UTF-8 can store: remove it or write the character it was meant to be"
                ]
            }
        )
