"""A group of gloo ranks on loopback for tests: ``launch`` runs a function on every rank.

Production ranks are started by ``torchrun`` or by ``engine.run.ranks`` (a run's supervisor); this
launcher is the tests' way to run a few lines on two ranks and get each rank's result back. It
sets the variables ``engine.parallel.distributed.init`` reads, as ``torchrun`` does.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from engine.net.ports import free_port
from engine.parallel.distributed import init, shutdown

T = TypeVar("T")


class RankFailed(RuntimeError):
    """A rank of ``launch`` raised or died; the message holds its traceback or exit status."""


def launch(nproc: int, target: Callable[..., T], *args: Any, timeout: float = 600.0) -> list[T]:
    """Run ``target(context, *args)`` in ``nproc`` new processes forming a group on loopback.

    Returns each rank's return value, by rank. ``target`` must be a module-level function and its
    arguments and result picklable. When a rank fails, the others are stopped and ``RankFailed``
    names it with its traceback; when the group is not done after ``timeout`` seconds every rank
    is stopped and ``TimeoutError`` is raised: a stuck collective never hangs the caller.
    """
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: start at least one process")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="groupwise-ranks-") as folder:
        group = mp.start_processes(
            _rank_main,
            args=(nproc, port, folder, target, args),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not group.join(timeout=max(deadline - time.monotonic(), 0.0), grace_period=2):
                if time.monotonic() >= deadline:
                    running = [i for i, p in enumerate(group.processes) if p.is_alive()]
                    _stop(group.processes)
                    raise TimeoutError(
                        f"ranks {running} of {nproc} were still running after {timeout:g} s: "
                        "a rank is stuck (in a collective another rank never reached?)"
                    )
        except ProcessException as error:
            raise RankFailed(_failure_report(Path(folder), nproc, error)) from error
        return [
            torch.load(Path(folder) / f"rank{rank}.pt", weights_only=False) for rank in range(nproc)
        ]


def _rank_main(
    rank: int,
    world: int,
    port: int,
    folder: str,
    target: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """One rank of ``launch``: join the group, run the target, keep its result for the parent."""
    if "OMP_NUM_THREADS" not in os.environ:
        # As torchrun does: ranks sharing a host's cores would otherwise each start a thread per
        # core and slow one another down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    context = init()
    assert context is not None
    try:
        result = target(context, *args)
    except BaseException:
        # Stamped before this rank's sockets close: the ranks this failure then breaks (a peer
        # waiting in a collective) fail later, so the earliest stamp is the cause.
        report = {"time": time.time(), "traceback": traceback.format_exc()}
        (Path(folder) / f"rank{rank}.error").write_text(json.dumps(report))
        raise
    shutdown()
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def _failure_report(folder: Path, nproc: int, error: ProcessException) -> str:
    """Which rank failed first, with its traceback, and which failed after it."""
    failures = sorted(
        (
            (json.loads(path.read_text()), int(path.stem.removeprefix("rank")))
            for path in folder.glob("rank*.error")
        ),
        key=lambda failure: failure[0]["time"],
    )
    if not failures:
        return f"rank {error.error_index} of {nproc} failed: {error}"
    (first, rank), later = failures[0], [rank for _report, rank in failures[1:]]
    then = f"\n(ranks {later} failed after it)" if later else ""
    return f"rank {rank} of {nproc} failed first:\n{first['traceback']}{then}"


def _stop(processes: Sequence[Any]) -> None:
    """Kill the ranks still running, then reap every one (none is left a zombie)."""
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join()
