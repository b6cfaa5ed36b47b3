"""A run's rollout samples as archive members: ``manifest.csv`` first, then one PNG per sample.

The caller passes a function that iterates the samples (a database cursor, a JSONL reader): it
is called twice, once for the manifest and once for the images, so no list of all samples is
held. A sample whose image file is gone (deleted to free disk) keeps its manifest row with an
empty ``file``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from engine.export.zipstream import ExportFile

MANIFEST = "manifest.csv"
#: The manifest's columns; ``file`` is the image's path inside the archive.
MANIFEST_COLUMNS = (
    "step",
    "rollout_index",
    "group_index",
    "sample_index",
    "prompt",
    "seed",
    "reward",
    "advantage",
    "reward_components",
    "file",
)
#: Manifest rows written per chunk.
_ROWS_PER_CHUNK = 500


class SampleRecord(NamedTuple):
    """One rollout sample and the PNG that holds its image."""

    step: int
    rollout_index: int
    group_index: int
    sample_index: int
    prompt: str
    seed: int
    reward: float
    advantage: float
    reward_components: dict[str, float]
    image: Path


def sample_file(record: SampleRecord) -> str:
    """The image's path inside the archive: one folder per rollout, named by step."""
    return (
        f"images/step-{record.step:06d}/"
        f"g{record.group_index:03d}-s{record.sample_index:03d}-{record.seed}.png"
    )


def sample_files(records: Callable[[], Iterable[SampleRecord]]) -> Iterator[ExportFile]:
    """The manifest, then every sample's image whose file exists."""
    yield ExportFile(MANIFEST, lambda: _manifest(records()))
    for record in records():
        if record.image.is_file():
            yield ExportFile(sample_file(record), record.image)


def _manifest(records: Iterable[SampleRecord]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for count, record in enumerate(records, start=1):
        writer.writerow(
            [
                record.step,
                record.rollout_index,
                record.group_index,
                record.sample_index,
                record.prompt,
                record.seed,
                record.reward,
                record.advantage,
                json.dumps(record.reward_components, sort_keys=True),
                sample_file(record) if record.image.is_file() else "",
            ]
        )
        if count % _ROWS_PER_CHUNK == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()
