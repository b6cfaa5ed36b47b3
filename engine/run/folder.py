"""A headless run's folder read back: what ``python -m engine train --out DIR`` wrote.

``scan(DIR)`` checks the whole of ``DIR/events.jsonl`` before anything is used (every line
parses as an event, sequence numbers rise, every image file exists inside DIR) and sums the run
up; ``read_events(DIR)`` then yields each event with its sequence number and its images read
from the PNG files. Problems raise ``RunFolderError`` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.events import Event

EVENTS_FILE = "events.jsonl"
#: Stands in for an image while ``scan`` validates events without decoding PNGs.
_PLACEHOLDER = np.zeros((1, 1, 3), dtype=np.uint8)


class RunFolderError(ValueError):
    """DIR is not a readable run folder; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class RunSummary:
    """What ``scan`` found."""

    #: The recipe of the last ``run_started`` (a resume may have raised ``run.max_steps``).
    recipe: dict[str, Any]
    #: Events in the file.
    events: int
    #: ``finished``, ``failed``, ``cancelled`` or ``interrupted``; ``interrupted`` too when the
    #: process died before writing ``run_ended``.
    status: str
    #: The error of a failed run, else "".
    error: str
    #: When the first and the last event happened (seconds since the epoch).
    started: float
    ended: float | None


def events_file(folder: Path) -> Path:
    """``folder/events.jsonl``; raises ``RunFolderError`` when it is not a run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a directory: give the --out DIR of a headless run")
    path = folder / EVENTS_FILE
    if not path.is_file():
        raise RunFolderError(
            f"{folder} is not a run folder: it has no {EVENTS_FILE} "
            "(written by `python -m engine train --out DIR`)"
        )
    return path


def scan(folder: Path) -> RunSummary:
    """Validate every line of the folder's events and sum the run up (see the module doc)."""
    folder = Path(folder)
    recipe: dict[str, Any] | None = None
    status, error, ended = "interrupted", "", None
    count, started = 0, 0.0
    for _seq, event in _events(folder, decode=False):
        count += 1
        started = started or event.time
        if event.type == "run_started":
            recipe = event.recipe  # type: ignore[attr-defined]
        elif event.type == "run_ended":
            status = event.status  # type: ignore[attr-defined]
            error = event.error or ""  # type: ignore[attr-defined]
            ended = event.time
    if recipe is None:
        raise RunFolderError(
            f"{events_file(folder)} has no run_started event: it is not the record of a run"
        )
    return RunSummary(recipe, count, status, error, started, ended)


def read_events(folder: Path) -> Iterator[tuple[int, Event]]:
    """Each event with its sequence number, images read from their PNG files."""
    return _events(Path(folder), decode=True)


def _events(folder: Path, *, decode: bool) -> Iterator[tuple[int, Event]]:
    path = events_file(folder)
    root = folder.resolve()
    previous = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                data = json.loads(line)
                seq = data.pop("seq")
                event = Event.from_dict(data, partial(_image, root, decode=decode, where=where))
            except RunFolderError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as problem:
                raise RunFolderError(
                    f"{where} is not a valid event ({type(problem).__name__}: {problem}): "
                    "the file is corrupt there; fix or remove that line"
                ) from None
            if not isinstance(seq, int) or seq <= previous:
                raise RunFolderError(
                    f"{where} has seq {seq!r} after {previous}: sequence numbers must rise"
                )
            previous = seq
            yield seq, event


def _image(root: Path, name: Any, *, decode: bool, where: str) -> np.ndarray:
    if not isinstance(name, str):
        raise RunFolderError(f"{where}: an image field holds {name!r}, not a file name")
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise RunFolderError(f"{where} names image {name}, which is not a file inside {root}")
    if not decode:
        return _PLACEHOLDER
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()
