"""The headless sink: events as JSON lines in ``DIR/events.jsonl``, images as PNG under
``DIR/images/``, the event's image fields holding each file's path relative to ``DIR``.

A resumed run appends to the same file; its ``run_started`` event carries the step it resumed
from, so a reader knows which earlier records the resume superseded (DESIGN.md section 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.events import Event


class JsonlSink:
    """``sink(event)`` appends one line; ``seq`` numbers events across resumes."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "events.jsonl"
        self.seq = _count_lines(self.path)

    def __call__(self, event: Event) -> None:
        self.seq += 1
        written = 0

        def save(image: np.ndarray) -> str:
            nonlocal written
            relative = f"images/{self.seq:07d}-{written:04d}.png"
            written += 1
            (self.out_dir / "images").mkdir(exist_ok=True)
            Image.fromarray(image).save(self.out_dir / relative)
            return relative

        record: dict[str, Any] = {"seq": self.seq, **event.to_dict(encode_image=save)}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n")


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
