"""Template filters for run pages."""

from __future__ import annotations

from django import template

register = template.Library()

_UNITS = ("B", "KB", "MB", "GB", "TB")


@register.filter(name="bytes")
def human_bytes(value: int | None) -> str:
    """1536 -> '1.5 KB': powers of 1024 with one decimal from KB on."""
    size = float(value or 0)
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{int(size)} B" if unit == 0 else f"{size:.1f} {_UNITS[unit]}"


@register.filter
def get_item(mapping: dict | None, key: str) -> object:
    """``mapping[key]`` in a template, or None."""
    return (mapping or {}).get(key)
