"""Streaming responses under ASGI: one chunk pulled per chunk sent, all in one thread that is not
the event loop's, the generator closed there when the client goes away (also mid-chunk)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator

from webapp.core.streaming import StreamingDownload


class Recorder:
    """A chunk generator that notes what it did and in which thread."""

    def __init__(self, count: int, gate: threading.Event | None = None) -> None:
        self.count = count
        self.gate = gate
        self.made = 0
        self.threads: set[int] = set()
        self.closed_in: int | None = None
        self.reading = threading.Event()

    def chunks(self) -> Iterator[bytes]:
        try:
            for index in range(self.count):
                self.threads.add(threading.get_ident())
                if index == 1 and self.gate is not None:
                    self.reading.set()
                    self.gate.wait(timeout=60)
                self.made += 1
                yield b"%d" % index
        finally:
            self.closed_in = threading.get_ident()


def test_chunks_are_made_as_they_are_read_in_one_thread_off_the_loop() -> None:
    recorder = Recorder(5)
    response = StreamingDownload(recorder.chunks())

    async def read() -> tuple[list[bytes], list[int], int]:
        seen, made = [], []
        async for chunk in aiter(response):
            seen.append(chunk)
            made.append(recorder.made)
        return seen, made, threading.get_ident()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django's "must consume synchronous iterators"
        seen, made, loop_thread = asyncio.run(read())
    assert seen == [b"0", b"1", b"2", b"3", b"4"]
    assert made == [1, 2, 3, 4, 5]  # never ahead of the reader
    (worker,) = recorder.threads
    assert worker != loop_thread and recorder.closed_in == worker


def test_a_client_gone_mid_download_closes_the_generator_in_its_thread() -> None:
    recorder = Recorder(1000)
    response = StreamingDownload(recorder.chunks())

    async def read_two() -> None:
        stream = aiter(response)
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # Django's handler does this when the client disconnects

    asyncio.run(read_two())
    assert recorder.made == 2
    assert recorder.closed_in in recorder.threads


def test_cancelled_while_a_chunk_is_read_the_chunk_finishes_then_the_generator_closes() -> None:
    gate = threading.Event()
    recorder = Recorder(1000, gate)
    response = StreamingDownload(recorder.chunks())

    async def download() -> None:
        async for _ in aiter(response):
            pass

    async def cancel_mid_chunk() -> bool:
        task = asyncio.create_task(download())
        await asyncio.to_thread(recorder.reading.wait, 60)
        task.cancel()
        gate.set()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancel_mid_chunk())
    assert recorder.made == 2  # the chunk in flight finished; no other was started
    assert recorder.closed_in in recorder.threads


def test_wsgi_and_the_test_client_read_the_generator_as_it_is() -> None:
    recorder = Recorder(3)
    response = StreamingDownload(recorder.chunks())
    assert list(response) == [b"0", b"1", b"2"]
    assert recorder.threads == {threading.get_ident()}
