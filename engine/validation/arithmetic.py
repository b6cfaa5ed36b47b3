"""Divisors and multiples, phrased as the fixes a problem suggests."""

from __future__ import annotations

import math

from engine.problems import or_list


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n`` in increasing order, in O(sqrt n) steps."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0] if n > 0 else []
    return small + [n // d for d in reversed(small) if d * d != n]


def near(candidates: list[int], wanted: int, keep: int = 8) -> str:
    """The ``keep`` candidates closest to ``wanted``, in order, as prose."""
    closest = sorted(sorted(candidates, key=lambda c: (abs(c - wanted), c))[:keep])
    return or_list(closest)


def multiples(value: int, step: int) -> str:
    below = value // step * step
    return or_list([v for v in (below, below + step) if v > 0])
