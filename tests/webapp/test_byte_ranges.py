"""The Range header parser against RFC 9110 §14's examples and edge cases, on a 10,000-byte
file unless said otherwise (the RFC's own examples use that size)."""

from __future__ import annotations

import pytest

from webapp.core.byte_ranges import UNSATISFIABLE, ByteRange, parse_range

SIZE = 10_000


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        # RFC 9110 §14.1.2: "the first 500 bytes", "the second 500 bytes".
        ("bytes=0-499", 0, 500),
        ("bytes=500-999", 500, 1000),
        # "the final 500 bytes": 10,000 - 500 = 9,500 up to the end.
        ("bytes=-500", 9500, 10_000),
        ("bytes=9500-", 9500, 10_000),
        # One byte, the first and the last.
        ("bytes=0-0", 0, 1),
        ("bytes=-1", 9999, 10_000),
        # A last position past the end is clipped to the file (9,999).
        ("bytes=9000-20000", 9000, 10_000),
        # A suffix longer than the file is the whole file.
        ("bytes=-20000", 0, 10_000),
        # The unit is case-insensitive; whitespace around the range is allowed.
        ("Bytes=1-2", 1, 3),
        ("bytes= 1-2 ", 1, 3),
    ],
)
def test_a_satisfiable_range(header: str, start: int, stop: int) -> None:
    wanted = parse_range(header, SIZE)
    assert wanted == ByteRange(start, stop, SIZE)
    assert isinstance(wanted, ByteRange)
    assert wanted.length == stop - start
    assert wanted.content_range == f"bytes {start}-{stop - 1}/{SIZE}"


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10000-", SIZE),  # the first position is the end itself
        ("bytes=10000-10005", SIZE),
        ("bytes=-0", SIZE),  # an empty suffix selects nothing
        ("bytes=0-", 0),  # nothing can be selected of an empty file
        ("bytes=-5", 0),
    ],
)
def test_an_unsatisfiable_range(header: str, size: int) -> None:
    assert parse_range(header, size) is UNSATISFIABLE
    assert UNSATISFIABLE.content_range(size) == f"bytes */{size}"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=5-1",  # last before first: invalid, so ignored
        "bytes=a-b",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=\u0661-2",  # an Arabic-Indic one is a digit to Python, not to HTTP
        "bytes=0-1,5-6",  # several ranges: ignored, the whole file is sent
        "items=0-1",
        "bytes 0-1",
        "0-1",
    ],
)
def test_anything_else_asks_for_the_whole_file(header: str | None) -> None:
    assert parse_range(header, SIZE) is None
