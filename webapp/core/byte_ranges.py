"""The ``Range`` request header (RFC 9110 §14): which bytes of a file a client asked for.

Pure: a header and a size in, one ``ByteRange``, ``UNSATISFIABLE`` or None (send the whole file)
out. One range is served; a header listing several is ignored, as the RFC allows (a server MAY
ignore ``Range``), since no client of ours asks for several and multipart answers would be the
one thing here nobody reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# bytes=first-last, bytes=first-, bytes=-suffix; the unit is case-insensitive, digits are ASCII.
_RANGE = re.compile(r"bytes=[ \t]*(?:([0-9]+)-([0-9]*)|-([0-9]+))[ \t]*", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to (not including) ``stop`` of a file of ``size`` bytes."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` of the 206 answer: ``bytes first-last/size``."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


@dataclass(frozen=True)
class Unsatisfiable:
    """A well-formed range that selects no byte of the file: answered 416."""

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` of the 416 answer: ``bytes */size``."""
        return f"bytes */{size}"


UNSATISFIABLE: Final = Unsatisfiable()


def parse_range(header: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """What ``header`` asks of a file of ``size`` bytes.

    None (the whole file, 200) for no header, another unit, several ranges or anything malformed,
    ``first > last`` included; ``UNSATISFIABLE`` (416) when ``first`` is at or past the end or
    the suffix is empty (``-0``); otherwise the range, its end clipped to the file's.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        length = int(suffix)
        if length == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(size - length, 0), size, size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    stop = size if not last else min(int(last) + 1, size)
    return ByteRange(start, stop, size)
