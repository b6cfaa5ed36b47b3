"""Sending a stored file the caller has already authorised: whole, one byte range, or by nginx.

``send_file`` answers with the file's type, length and validators (``ETag``, ``Last-Modified``,
so a browser revalidates with a 304), ``Accept-Ranges: bytes`` and, for a ``Range`` request,
206 with ``Content-Range`` or 416 (``webapp.core.byte_ranges`` says which). Given an internal
URL it sends no byte itself: an empty answer whose ``X-Accel-Redirect`` has nginx send the file
from an ``internal`` location (docs/deploy.md), ranges and all.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, parse_http_date_safe

from webapp.core.byte_ranges import ByteRange, Unsatisfiable, parse_range
from webapp.core.streaming import FileDownload


def send_file(request: HttpRequest, path: Path, *, internal_url: str = "") -> HttpResponseBase:
    """The answer to ``request`` for the file at ``path``; through nginx at ``internal_url``
    when given (already quoted, under an ``internal`` location)."""
    if internal_url:
        redirect = HttpResponse()
        # nginx takes the file's type from its own mime table, the length and ranges from disk.
        del redirect["Content-Type"]
        redirect["X-Accel-Redirect"] = internal_url
        return redirect
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    modified = int(stat.st_mtime)
    response: HttpResponseBase | None = get_conditional_response(
        request, etag=etag, last_modified=modified
    )
    if response is None:
        wanted = parse_range(request.headers.get("Range"), stat.st_size)
        if wanted is not None and not _if_range_holds(request, etag, modified):
            wanted = None
        response = _file_answer(path, wanted)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(modified)
    return response


def _file_answer(path: Path, wanted: ByteRange | Unsatisfiable | None) -> HttpResponseBase:
    if isinstance(wanted, Unsatisfiable):
        refused = HttpResponse(status=416)
        refused["Content-Range"] = wanted.content_range(path.stat().st_size)
        return refused
    handle = path.open("rb")
    if wanted is None:
        return FileDownload(handle, filename=path.name)
    handle.seek(wanted.start)
    partial = FileDownload(_Slice(handle, wanted.length), status=206, filename=path.name)
    partial["Content-Length"] = str(wanted.length)
    partial["Content-Range"] = wanted.content_range
    return partial


def _if_range_holds(request: HttpRequest, etag: str, modified: int) -> bool:
    """RFC 9110 §13.1.5: a ``Range`` counts only if ``If-Range`` (when sent) still matches:
    the same strong ETag, or exactly the ``Last-Modified`` date; otherwise the whole file."""
    condition = request.headers.get("If-Range", "").strip()
    if not condition:
        return True
    if condition.startswith(('"', "W/")):
        return condition == etag
    return parse_http_date_safe(condition) == modified


class _Slice:
    """The next ``length`` bytes of an open file, read the way ``FileResponse`` reads files."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._handle.close()
