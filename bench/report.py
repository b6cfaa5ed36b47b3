"""What every bench shares: a heading that says when and on what it ran, and publishing its table.

The benches run as scripts (``python bench/NAME.py``), so this module is imported as ``report``,
from the bench folder Python puts first on the path.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE = REPO / "docs" / "performance.md"


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


def scratch_django(prefix: str) -> Path:
    """Set Django up in this process on a new scratch SQLite database under a temporary folder
    named ``prefix``..., migrated like `make run` does; the test client's host allowed. Returns
    the folder (the run's media land there too)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(GROUPWISE_VAR_DIR=str(scratch), DJANGO_SETTINGS_MODULE="webapp.settings")
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0)
    return scratch
