"""Dataclasses as plain JSON data and back, following their type hints.

``to_plain(value)`` turns dataclasses (their fields, in order), tuples, lists, mappings and numpy
scalars into dicts, lists, numbers, text, booleans and None. Non-finite floats (a diverged loss)
become the strings "NaN", "Infinity" and "-Infinity", so the JSON stays strict and a browser can
parse it. ``from_plain(cls, data)`` is the inverse: it builds the dataclass ``cls``, reading each
field by its type hint. Arrays have no one plain form: the caller passes ``encode_array`` and
``decode_array`` (events store images as base64, or as files under media).

Events and sweep reports convert both ways here. A recipe writes itself here too, but reads its
data with its own parser (``engine.recipe``): that data is a user's, and every problem in it is
reported at once, naming its field.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np

T = TypeVar("T")
ArrayEncoder = Callable[[np.ndarray], Any]
ArrayDecoder = Callable[[Any], np.ndarray]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float) -> float | str:
    """``value`` as strict JSON takes it: a non-finite float as "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def decode_float(value: float | str) -> float:
    """The inverse of ``encode_float``."""
    return _NON_FINITE[value] if isinstance(value, str) else float(value)


_FIELD_HINTS: dict[type, dict[str, Any]] = {}


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type hint of each field of the dataclass ``cls``, in field order; one dict
    per class, shared by every caller (read it, never change it)."""
    if cls not in _FIELD_HINTS:
        hints = get_type_hints(cls)
        _FIELD_HINTS[cls] = {f.name: hints[f.name] for f in fields(cls)}
    return _FIELD_HINTS[cls]


def to_plain(
    value: Any, *, encode_array: ArrayEncoder | None = None, nonfinite_as_text: bool = True
) -> Any:
    """``value`` as plain data; arrays go through ``encode_array`` (a ``TypeError`` without one).

    ``nonfinite_as_text=False`` keeps non-finite floats as floats, for data whose own format
    writes them (the recipe's JSON and TOML forms).
    """

    def plain(item: Any) -> Any:
        if is_dataclass(item) and not isinstance(item, type):
            return {f.name: plain(getattr(item, f.name)) for f in fields(item)}
        if isinstance(item, np.ndarray):
            if encode_array is None:
                raise TypeError("an array has no plain form of its own: pass encode_array")
            return encode_array(item)
        if isinstance(item, list | tuple):
            return [plain(each) for each in item]
        if isinstance(item, Mapping):
            return {str(key): plain(each) for key, each in item.items()}
        if isinstance(item, np.generic):
            return plain(item.item())
        if isinstance(item, float) and nonfinite_as_text:
            return encode_float(item)
        return item

    return plain(value)


def from_plain(
    cls: type[T], data: Mapping[str, Any], *, decode_array: ArrayDecoder | None = None
) -> T:
    """The dataclass ``cls`` built from ``to_plain``'s ``data``.

    Each field is read by its type hint: dataclasses, ``X | None``, tuples, dicts, floats (their
    strict-JSON text included) and arrays (through ``decode_array``); any other value is taken
    as it is. Fields ``data`` leaves out take their defaults. Raises ``ValueError`` naming the
    keys that are no field of their dataclass.
    """
    value = _read(cls, data, decode_array)
    assert isinstance(value, cls)
    return value


def _read(hint: Any, value: Any, decode_array: ArrayDecoder | None) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is np.ndarray or origin is np.ndarray:
        if decode_array is None:
            raise TypeError("an array has no plain form of its own: pass decode_array")
        return decode_array(value)
    if is_dataclass(hint) and isinstance(hint, type):
        known = field_hints(hint)
        unknown = set(value) - set(known)
        if unknown:
            raise ValueError(f"{hint.__name__} has no fields {sorted(unknown)}")
        return hint(**{k: _read(known[k], v, decode_array) for k, v in value.items()})
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _read(inner, value, decode_array)
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        item_hints = [args[0]] * len(value) if variable else list(args)
        return tuple(
            _read(item_hint, item, decode_array)
            for item, item_hint in zip(value, item_hints, strict=True)
        )
    if origin is dict:
        return {key: _read(args[1], item, decode_array) for key, item in value.items()}
    if hint is float:
        return decode_float(value)
    return value
