"""How the loop tests read a run: its events in emitted order, and a checkpoint's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from engine import events


class Recorder:
    """A sink that keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    """The trainable weights of the run in ``out`` at checkpoint ``step``."""
    return load_file(out / "checkpoints" / f"step-{step:06d}" / "model.safetensors")
