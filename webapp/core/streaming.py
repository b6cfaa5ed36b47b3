"""Responses whose synchronous iterators stream under ASGI, one chunk at a time.

Django's ASGI handler consumes a streaming response through ``__aiter__``; for a synchronous
iterator its own ``__aiter__`` reads the whole iterator into a list in a thread before the first
byte leaves, so a zip of gigabytes would sit whole in the web process. The classes here keep
the synchronous iterator (WSGI and the test client read it as they always did) and give ASGI an
``__aiter__`` that pulls it one chunk at a time in a thread of the response's own.

That thread is the iterator's only one: its first chunk opens whatever it reads (a database
cursor, a file) and every later chunk and the final ``close()`` run there too, in order, so a
cursor is never used from two threads and closing never races a chunk still being read. When
the client goes away Django cancels the response: the chunk being read is let finish, then the
iterator is closed in its thread (a generator's ``finally`` runs: scratch folders go), and the
thread's database connection is closed with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections
from django.http import FileResponse, StreamingHttpResponse

#: Bytes a file response reads per chunk: each chunk is one hop to the response's thread.
FILE_BLOCK = 1 << 20


class _PulledInThread(StreamingHttpResponse):
    """Streams a synchronous iterator to ASGI without reading ahead of the client."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.is_async:
            async for part in super().__aiter__():
                yield part
            return
        loop = asyncio.get_running_loop()
        chunks = iter(self)
        # One worker: the final close queues behind the chunk in flight, on the same thread.
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="groupwise-stream")
        try:
            while True:
                chunk = await loop.run_in_executor(worker, next, chunks, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            await asyncio.shield(loop.run_in_executor(worker, self._finish))
            worker.shutdown(wait=False)

    def _finish(self) -> None:
        """Close the iterator and this thread's database connections, in the worker."""
        # Django keeps the content's iterator here (the generator itself, when the content is
        # one); the stubs leave it out. Closing it runs the generator's cleanup.
        iterator: Any = self._iterator  # type: ignore[attr-defined]
        if hasattr(iterator, "close"):
            iterator.close()
        connections.close_all()


class StreamingDownload(_PulledInThread):
    """``StreamingHttpResponse`` over a synchronous iterator that streams under ASGI too."""


class FileDownload(_PulledInThread, FileResponse):
    """``FileResponse`` that streams under ASGI too, reading ``FILE_BLOCK`` bytes at a time."""

    block_size = FILE_BLOCK
