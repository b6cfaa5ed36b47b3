"""The streamed zip: members from bytes, files and generators read back byte for byte."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from engine.export import zipstream
from engine.export.zipstream import ExportFile, stream_zip, write_zip


def test_members_round_trip_and_the_stream_comes_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zipstream, "CHUNK", 1000)
    big = tmp_path / "weights.safetensors"
    payload = bytes(range(256)) * 40  # 10240 bytes: eleven reads of 1000
    big.write_bytes(payload)
    files = [
        ExportFile("README.md", b"# hello\n"),
        ExportFile("weights/model.safetensors", big),
        ExportFile("manifest.csv", lambda: iter([b"a,b\n", b"1,2\n"])),
    ]
    chunks = list(stream_zip(files))
    assert len(chunks) >= 11
    assert max(len(chunk) for chunk in chunks) < 2000
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["README.md", "weights/model.safetensors", "manifest.csv"]
        assert archive.read("README.md") == b"# hello\n"
        assert archive.read("weights/model.safetensors") == payload
        assert archive.read("manifest.csv") == b"a,b\n1,2\n"
        kinds = {info.filename: info.compress_type for info in archive.infolist()}
    assert kinds["weights/model.safetensors"] == zipfile.ZIP_STORED
    assert kinds["manifest.csv"] == zipfile.ZIP_DEFLATED


def test_members_are_generated_one_at_a_time(tmp_path: Path) -> None:
    """A generator of members is consumed as the archive is written, not listed first."""
    made: list[str] = []

    def members():
        for index in range(3):
            made.append(f"{index}.txt")
            yield ExportFile(f"{index}.txt", str(index).encode())

    stream = stream_zip(members())
    next(stream)
    assert made == ["0.txt"]
    rest = list(stream)
    assert made == ["0.txt", "1.txt", "2.txt"] and rest


def test_write_zip_and_a_missing_file(tmp_path: Path) -> None:
    path = write_zip([ExportFile("a.txt", b"a")], tmp_path / "a.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.read("a.txt") == b"a"
    with pytest.raises(FileNotFoundError):
        list(stream_zip([ExportFile("gone.png", tmp_path / "gone.png")]))


def test_a_generated_member_of_known_size_gets_zip64_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Zip64 fields, needed above 2 GiB, must be chosen before a member is written: from
    ``size`` for a generated member. With the limit lowered to 1,000 bytes, 1,500 generated
    bytes fail without their size and round-trip with it."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    payload = bytes(range(250)) * 6  # 1,500 bytes

    def member(size: int | None) -> ExportFile:
        return ExportFile("w.safetensors", lambda: iter([payload[:700], payload[700:]]), size)

    with pytest.raises(RuntimeError, match="force_zip64"):
        list(stream_zip([member(None)]))
    data = b"".join(stream_zip([member(len(payload))]))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("w.safetensors") == payload
