"""A zip archive produced as a stream of bytes, one member at a time, never whole in memory.

Exports (weights, samples) can be gigabytes: ``stream_zip(files)`` yields the archive in chunks
while it reads each member from disk (or from a generator), so a web response can send it as it
is made. ``zipfile`` writes to unseekable output by putting each member's sizes and CRC in a data
descriptor after its bytes; every common unzip tool reads such archives.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Bytes read from a member's source at a time.
CHUNK = 1 << 20
#: Members stored as they are: their formats are compressed already or barely compress.
STORED_SUFFIXES = (".png", ".safetensors", ".pt", ".zip")


@dataclass(frozen=True)
class ExportFile:
    """One member of an export: its path inside the archive and where its bytes come from.

    ``source`` is the content itself, a file on disk (read when the member is written), or a
    callable returning an iterable of byte chunks (called once, when the member is written).
    ``size`` is a callable's byte count when known: zip64 fields, needed above 2 GiB, must be
    chosen before the member is written (a file's size is read from the disk).
    """

    name: str
    source: bytes | Path | Callable[[], Iterable[bytes]]
    size: int | None = None


class _Buffer:
    """The write-only file ``zipfile`` writes into; ``drain()`` hands over what it holds."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: bytes wait in memory until drained."""

    def close(self) -> None:
        """Nothing to close: the stream's consumer owns what was drained."""

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks = []
        return data


def stream_zip(files: Iterable[ExportFile]) -> Iterator[bytes]:
    """The zip archive of ``files``, in chunks of about ``CHUNK`` bytes or less.

    Members are written in order; ``files`` may be a generator, so an archive of many files
    never holds their list. Raises ``FileNotFoundError`` (mid-stream) for a missing source file.
    """
    buffer = _Buffer()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for member in files:
            info = zipfile.ZipInfo(member.name, date_time=stamp)
            stored = member.name.endswith(STORED_SUFFIXES)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            if isinstance(member.source, bytes):
                archive.writestr(info, member.source)
            else:
                size = (
                    member.source.stat().st_size
                    if isinstance(member.source, Path)
                    else member.size or 0
                )
                info.file_size = size
                # Sizes above 2 GiB need zip64 fields, which must be chosen before writing.
                with archive.open(info, "w", force_zip64=size > zipfile.ZIP64_LIMIT) as out:
                    for chunk in _chunks(member.source):
                        out.write(chunk)
                        data = buffer.drain()
                        if data:
                            yield data
            data = buffer.drain()
            if data:
                yield data
    tail = buffer.drain()
    if tail:
        yield tail


def write_zip(files: Iterable[ExportFile], path: Path) -> Path:
    """Write the archive of ``files`` to ``path``; returns ``path``."""
    with Path(path).open("wb") as out:
        for chunk in stream_zip(files):
            out.write(chunk)
    return Path(path)


def _chunks(source: Path | Callable[[], Iterable[bytes]]) -> Iterator[bytes]:
    if isinstance(source, Path):
        with source.open("rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")
    else:
        yield from source()
