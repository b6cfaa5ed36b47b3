"""Samples export: the manifest names every sample, each present image follows it."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from engine.export.samples import MANIFEST_COLUMNS, SampleRecord, sample_files
from engine.export.zipstream import stream_zip


def test_manifest_and_images(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png-a")
    records = [
        SampleRecord(
            0, 0, 0, 0, 'a "red", image', 11, 0.5, 1.0, {"color": 0.5}, tmp_path / "a.png"
        ),
        SampleRecord(0, 0, 1, 3, "gone", 12, 0.25, -1.0, {}, tmp_path / "missing.png"),
    ]
    calls = []

    def source():
        calls.append(1)
        return iter(records)

    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(sample_files(source)))))
    assert len(calls) == 2
    assert archive.namelist() == ["manifest.csv", "images/step-000000/g000-s000-11.png"]
    assert archive.read("images/step-000000/g000-s000-11.png") == b"png-a"
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert rows[0]["prompt"] == 'a "red", image' and rows[0]["seed"] == "11"
    assert float(rows[0]["reward"]) == 0.5 and float(rows[1]["advantage"]) == -1.0
    assert json.loads(rows[0]["reward_components"]) == {"color": 0.5}
    assert rows[0]["file"] == "images/step-000000/g000-s000-11.png"
    assert (rows[1]["group_index"], rows[1]["sample_index"], rows[1]["file"]) == ("1", "3", "")
