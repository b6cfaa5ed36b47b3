"""How long the memory plan's exact parameter counts take: each shipped architecture built on the
meta device, as ``python -m engine.memory.architecture`` and a recipe with ``model.path`` do.

    python bench/meta_counts.py

One process: the imports of diffusers and transformers first (paid once per process), then each
architecture once (``engine.memory.architecture`` caches a directory's counts per process, so a
second build of the same directory is free). Validation itself never builds: it reads counts.json.
The first build also pays for diffusers' lazily imported model modules. The table is printed and
appended to docs/performance.md with the machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.memory.architecture import SHIPPED, measure_shipped  # noqa: E402


def _amount(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e3:.0f} k"


def main() -> int:
    started = time.perf_counter()
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    rows = [f"| import diffusers + transformers | | {time.perf_counter() - started:.2f} |"]
    for name in SHIPPED:
        started = time.perf_counter()
        arch = measure_shipped(name)
        seconds = time.perf_counter() - started
        total = arch.transformer.params + sum(c.params for c in arch.text_encoders)
        total += 0 if arch.vae is None else arch.vae.params
        rows.append(
            f"| {name} | {_amount(arch.transformer.params)} DiT, {_amount(total)} in all "
            f"| {seconds:.2f} |"
        )
    publish(
        "\n".join(
            [
                heading("Exact parameter counts on the meta device"),
                "",
                "`bench/meta_counts.py`: every component of each shipped architecture built on the "
                "meta device with the installed diffusers and transformers classes, one process.",
                "",
                "| architecture | parameters | seconds |",
                "|---|---|---|",
                *rows,
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
