"""``python -m engine train``: one run, with a progress line and Ctrl-C.

The run trains in ``--nproc`` ranks (``engine.run.ranks.train``; by default the recipe's
``num_gpus``, gloo on CPU when there is no GPU): one trains in this process, more are
subprocesses this process supervises. The first Ctrl-C asks the loop to stop between phases (the
run ends ``interrupted``, resumable by running the same command); a second one stops at once
(and kills the ranks).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine import events
from engine.recipe import Recipe
from engine.run.jsonl_sink import JsonlSink

EXIT_CODES = {"finished": 0, "failed": 1, "cancelled": 130, "interrupted": 130}


class Progress:
    """A one-line bar on a terminal (plain lines otherwise): step, reward, images/s, ETA."""

    def __init__(self, max_steps: int, out: TextIO) -> None:
        self.max_steps, self.out = max_steps, out
        self.reward = float("nan")
        self.images_per_second = float("nan")
        self.started = time.monotonic()
        self.first_step: int | None = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.RunStarted):
            self.first_step = event.start_step
        elif isinstance(event, events.RolloutFinished):
            rewards = [s.reward for g in event.groups for s in g.samples]
            self.reward = sum(rewards) / len(rewards)
        elif isinstance(event, events.Throughput):
            self.images_per_second = event.images_per_second
            self._draw(event.step)
        elif isinstance(event, events.RunEnded):
            suffix = f": {event.error}" if event.error else ""
            print(f"\nrun {event.status} after step {event.step}{suffix}", file=self.out)
        elif isinstance(event, events.LogLine) and event.level in ("warning", "error"):
            print(f"\n{event.level}: {event.message}", file=self.out)

    def _draw(self, step: int) -> None:
        done = step - (self.first_step or 0)
        elapsed = time.monotonic() - self.started
        remaining = (self.max_steps - step) * elapsed / done if done else float("nan")
        width = 24
        filled = int(width * step / self.max_steps) if self.max_steps else width
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.max_steps} "
            f"reward {self.reward:.3f} {self.images_per_second:.1f} img/s "
            f"ETA {_duration(remaining)}"
        )
        terminal = getattr(self.out, "isatty", lambda: False)()
        print(("\r" + line) if terminal else line, end="" if terminal else "\n", file=self.out)
        self.out.flush()


def train(recipe: Recipe, out_dir: Path, out: TextIO = sys.stdout, nproc: int | None = None) -> int:
    from engine.run.ranks import train as train_ranks

    jsonl = JsonlSink(out_dir)
    progress = Progress(recipe.run.max_steps, out)
    stop: dict[str, Any] = {"requested": False}

    def interrupt(_signum: int, _frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nstopping after this phase (Ctrl-C again to stop now)…", file=out)

    def sink(event: events.Event) -> None:
        jsonl(event)
        progress(event)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        ended = train_ranks(
            recipe,
            sink,
            lambda: "interrupted" if stop["requested"] else None,
            out_dir=out_dir,
            nproc=nproc,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_CODES[ended.status]


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
