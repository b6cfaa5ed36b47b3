"""The sweep page's charts: a measured quantity against the microgroup size M, as SVG points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def chart(
    rows: Sequence[dict[str, Any]], key: str, *, width: int = 420, height: int = 180
) -> dict[str, Any]:
    """An SVG line chart of ``key`` against M: points, axis labels, and the plot's size."""
    pad = 36
    values = [(int(r["microgroup_size"]), float(r[key])) for r in rows]
    if not values:
        return {"points": "", "dots": [], "width": width, "height": height, "max": 0}
    top = max(v for _, v in values) or 1.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    dots = [
        {
            "x": round(pad + i * step, 1),
            "y": round(height - pad - (v / top) * (height - 2 * pad), 1),
            "m": m,
            "value": v,
        }
        for i, (m, v) in enumerate(values)
    ]
    return {
        "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "width": width,
        "height": height,
        "max": top,
        "baseline": height - pad,
        "pad": pad,
    }
