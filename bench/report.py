"""What every bench shares: a heading that says when and on what it ran, and publishing its table.

The benches run as scripts (``python bench/NAME.py``), so this module is imported as ``report``,
from the bench folder Python puts first on the path.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

PERFORMANCE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def heading(title: str, *details: str) -> str:
    """``### title (YYYY-MM-DD HH:MM UTC, host: N cores, arch, details...)``."""
    machine = ", ".join(
        [f"{platform.node()}: {os.cpu_count()} cores", platform.machine(), *details]
    )
    return f"### {title} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine})"


def publish(table: str) -> None:
    """Print ``table`` and append it to docs/performance.md."""
    print(table)
    with PERFORMANCE.open("a") as out:
        out.write("\n" + table)
