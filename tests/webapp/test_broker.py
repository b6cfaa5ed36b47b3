"""The embedded broker: processes that declare the same queues at the same moment all succeed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from kombu import Connection, Queue

from webapp import broker

#: Enough fresh queues that, started together, the two processes insert some of them at once.
QUEUES = [f"q{index}" for index in range(40)]


def _declare(url: str, start: multiprocessing.synchronize.Barrier) -> None:
    broker.register()
    with Connection(url) as connection:
        channel = connection.channel()
        start.wait()
        for name in QUEUES:
            Queue(name, channel=channel).declare()


def test_two_processes_declaring_the_same_queues_at_once_both_succeed(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [context.Process(target=_declare, args=(url, start)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    broker.register()
    with Connection(url) as connection:
        for name in QUEUES:
            # Each queue works: a message put on it comes back.
            with connection.SimpleQueue(name) as queue:
                queue.put({"body": name})
                assert queue.get(timeout=10).payload == {"body": name}
