"""A run's data-parallel ranks, started and watched by the process that owns the run.

``train(recipe, sink, should_stop, *, out_dir, ...)`` is ``engine.run.loop.run`` for any number of
ranks (``nproc``, by default the recipe's ``num_gpus``). One rank trains in this process. N ranks
are N subprocesses ``python -m engine.run.ranks`` forming a group on loopback (``MASTER_ADDR``
127.0.0.1, a free ``MASTER_PORT``; nccl with one GPU each, gloo on CPU); this process stays out
of the group and only supervises:

- rank 0 writes its events as JSON lines to a pipe; they are decoded here and handed to
  ``sink`` in order, so the sink (the CLI's JSONL, the web's ``RunSink``) sees one copy of each;
- ``should_stop`` is asked here every ``STOP_POLL_SECONDS``; its answer is written to a file
  that rank 0's own ``should_stop`` reads, and the loop stops every rank at the same point;
- the ranks run in their own session (a Ctrl-C at the terminal reaches only this process) and
  are killed if this process dies, even by SIGKILL (``PR_SET_PDEATHSIG``): no orphans;
- once a rank has exited, the others get ``GRACE_SECONDS`` to follow, then are killed: a rank
  stuck in a collective never hangs the run. The run ends ``failed`` when a rank failed, naming
  the rank that failed first (its traceback is in ``OUT/logs/rank-K.log``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from engine import events
from engine.net.ports import free_port
from engine.parallel import distributed
from engine.recipe import Recipe
from engine.validation import validate

Sink = Callable[[events.Event], None]
StopCheck = Callable[[], str | None]
#: How often the supervisor asks ``should_stop`` (it may query a database).
STOP_POLL_SECONDS = 0.5
#: How long the other ranks may take to exit once one rank has exited.
GRACE_SECONDS = 30.0
#: How long a collective waits for a rank: longer than rank 0's longest phase (a rollout, or an
#: evaluation, while the other ranks wait in a broadcast).
RANK_TIMEOUT = timedelta(minutes=30)
#: Where each rank's output goes, under the run's folder.
LOG_DIR = "logs"


def rank_problem(recipe: Recipe, nproc: int) -> str | None:
    """Why ``nproc`` ranks cannot train ``recipe`` on this host, or None when they can."""
    gpus = recipe.layout.num_gpus
    if nproc not in (1, gpus):
        return (
            f"{nproc} processes but layout.num_gpus={gpus}: start {gpus} (or 1, which trains "
            "every rank's share in one process and takes the same steps)"
        )
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc > 1 and devices and nproc > devices:
        return (
            f"num_gpus={nproc} needs {nproc} CUDA devices but this host has {devices}: set "
            f"num_gpus={devices} or run on a larger host"
        )
    return None


def train(
    recipe: Recipe,
    sink: Sink,
    should_stop: StopCheck = lambda: None,
    *,
    out_dir: Path,
    model_dir: Path | None = None,
    nproc: int | None = None,
) -> events.RunEnded:
    """Train ``recipe`` in ``nproc`` ranks (default ``layout.num_gpus``); the run's end event.

    Never raises for a failed run (like ``engine.run.loop.run``); a sink or ``should_stop`` that
    raises stops the ranks and the error propagates.
    """
    from engine.run.loop import run

    count = recipe.layout.num_gpus if nproc is None else nproc
    # An invalid recipe fails the same way in any number of ranks: report it without starting any.
    if count == 1 or validate(recipe):
        return run(recipe, sink, should_stop, out_dir=out_dir, model_dir=model_dir)
    problem = rank_problem(recipe, count)
    if problem is not None:
        ended = events.RunEnded(status="failed", step=0, error=problem)
        sink(ended)
        return ended
    return _Group(recipe, Path(out_dir), model_dir, count).run(sink, should_stop)


@dataclass
class _Group:
    """The rank processes of one run and what they reported."""

    recipe: Recipe
    out_dir: Path
    model_dir: Path | None
    nproc: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: When each rank was first seen exited, by rank.
    exited: dict[int, float] = field(default_factory=dict)
    #: Ranks this supervisor killed (after the grace period).
    killed: set[int] = field(default_factory=set)

    def run(self, sink: Sink, should_stop: StopCheck) -> events.RunEnded:
        with tempfile.TemporaryDirectory(prefix="groupwise-ranks-") as temp:
            folder = Path(temp)
            (folder / "recipe.json").write_text(json.dumps(self.recipe.to_dict()))
            read_end, write_end = os.pipe()
            try:
                self._start(folder, write_end)
                os.close(write_end)
                write_end = -1
                ended, step = self._supervise(read_end, folder, sink, should_stop)
            finally:
                for fd in (read_end, write_end):
                    if fd >= 0:
                        os.close(fd)
                self._kill(range(self.nproc))
            final = _outcome(ended, step, self._reports(folder), self.nproc, self._crashes())
        sink(final)
        return final

    def _start(self, folder: Path, events_fd: int) -> None:
        logs = self.out_dir / LOG_DIR
        logs.mkdir(parents=True, exist_ok=True)
        port = free_port()
        parent = os.getpid()
        for rank in range(self.nproc):
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(self.nproc),
                "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            # As torchrun does: ranks sharing a host's cores would otherwise each start a thread
            # per core and slow one another down.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.nproc)))
            command = [sys.executable, "-m", "engine.run.ranks", "--folder", str(folder)]
            command += ["--out", str(self.out_dir)]
            if self.model_dir is not None:
                command += ["--model-dir", str(self.model_dir)]
            if rank == 0:
                command += ["--events-fd", str(events_fd)]
            with (logs / f"rank-{rank}.log").open("ab") as log:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(events_fd,) if rank == 0 else (),
                        start_new_session=True,
                        preexec_fn=(lambda: _die_with(parent)) if sys.platform == "linux" else None,
                    )
                )

    def _supervise(
        self, read_end: int, folder: Path, sink: Sink, should_stop: StopCheck
    ) -> tuple[events.RunEnded | None, int]:
        """Hand rank 0's events to ``sink`` until every rank exited; rank 0's end event (held
        back: the group's outcome may change it) and the last step reported."""
        ended: events.RunEnded | None = None
        step, buffer, open_pipe = 0, b"", True
        stop_sent, next_stop_check = False, 0.0
        while open_pipe or len(self.exited) < self.nproc:
            if open_pipe and select.select([read_end], [], [], STOP_POLL_SECONDS / 2)[0]:
                chunk = os.read(read_end, 1 << 20)
                open_pipe = bool(chunk)
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    event = events.Event.from_json(line.decode("utf-8"))
                    if isinstance(event, events.RunEnded):
                        ended = event
                        continue
                    step = getattr(event, "step", step)
                    sink(event)
            elif not open_pipe:
                # Rank 0 is gone; the others wait here (no busy loop) until they exit.
                select.select([], [], [], STOP_POLL_SECONDS / 2)
            now = time.monotonic()
            if not stop_sent and now >= next_stop_check:
                next_stop_check = now + STOP_POLL_SECONDS
                status = should_stop()
                if status is not None:
                    _write_atomically(folder / "stop", status)
                    stop_sent = True
            self._watch(now)
        return ended, step

    def _watch(self, now: float) -> None:
        """Note exited ranks; once one exited, kill the others after the grace period."""
        for rank, process in enumerate(self.processes):
            if rank not in self.exited and process.poll() is not None:
                self.exited[rank] = time.time()
        if self.exited and len(self.exited) < self.nproc:
            first = min(self.exited.values())
            if time.time() - first > GRACE_SECONDS:
                self._kill(r for r in range(self.nproc) if r not in self.exited)
                for rank in range(self.nproc):
                    self.exited.setdefault(rank, time.time())

    def _kill(self, ranks: Iterable[int]) -> None:
        """Kill ``ranks`` that still run, and reap every rank started."""
        for rank in ranks:
            process = self.processes[rank] if rank < len(self.processes) else None
            if process is not None and process.poll() is None:
                process.kill()
                self.killed.add(rank)
        for process in self.processes:
            process.wait()

    def _reports(self, folder: Path) -> dict[int, events.RunEnded]:
        """Each rank's own end, as it wrote it (a rank that died wrote none)."""
        reports = {}
        for rank in range(self.nproc):
            path = folder / f"ended-{rank}.json"
            if path.exists():
                event = events.Event.from_json(path.read_text())
                assert isinstance(event, events.RunEnded)
                reports[rank] = event
        return reports

    def _crashes(self) -> dict[int, tuple[float, str]]:
        """Ranks that exited on their own without a report: when, and how."""
        return {
            rank: (
                self.exited.get(rank, time.time()),
                f"exited with code {process.returncode}: see "
                f"{self.out_dir / LOG_DIR / f'rank-{rank}.log'}",
            )
            for rank, process in enumerate(self.processes)
            if rank not in self.killed and process.returncode != 0
        }


def _outcome(
    ended: events.RunEnded | None,
    step: int,
    reports: dict[int, events.RunEnded],
    nproc: int,
    crashes: dict[int, tuple[float, str]],
) -> events.RunEnded:
    """The run's end: rank 0's, unless a rank failed; then the error names the first cause.

    A rank that died without reporting (killed by the kernel, a crash in native code) is the
    cause before any rank that reported a failure: those follow a dead peer. Among the reports, a
    failure passed on from rank 0 (``RankZeroFailed``) is no cause, and the earliest one wins.
    """
    echoed = f"{distributed.RankZeroFailed.__name__}:"
    failed = {
        rank: (report.time, report.error or "failed")
        for rank, report in reports.items()
        if report.status == "failed" and not (report.error or "").startswith(echoed)
    }
    causes = crashes or failed
    if not causes:
        return ended or events.RunEnded(status="failed", step=step, error="rank 0 reported no end")
    rank = min(causes, key=lambda r: (causes[r][0], r))
    message = causes[rank][1]
    error = message if rank == 0 else f"rank {rank} of {nproc} failed first: {message}"
    return events.RunEnded(status="failed", step=ended.step if ended else step, error=error)


def _die_with(parent: int) -> None:
    """In a rank, before it runs: get SIGKILL when the supervisor dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        # The supervisor died before the line above took effect.
        os._exit(1)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def rank_main(argv: Sequence[str] | None = None) -> int:
    """One rank (``python -m engine.run.ranks``; the environment names the rank): join the group,
    run the loop, write this rank's end event for the supervisor. 0 unless it crashed."""
    parser = argparse.ArgumentParser(prog="python -m engine.run.ranks")
    parser.add_argument("--folder", type=Path, required=True, help="the supervisor's folder")
    parser.add_argument("--out", type=Path, required=True, help="the run's folder")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--events-fd", type=int, default=None, help="rank 0: where events go")
    args = parser.parse_args(argv)
    from engine.run.loop import run

    recipe = Recipe.from_dict(json.loads((args.folder / "recipe.json").read_text()))
    context = distributed.init(RANK_TIMEOUT)
    if context is None:
        raise SystemExit("WORLD_SIZE is not set: start ranks through engine.run.ranks.train")
    stream = None if args.events_fd is None else os.fdopen(args.events_fd, "w", encoding="utf-8")

    def sink(event: events.Event) -> None:
        if stream is not None:
            stream.write(event.to_json() + "\n")
            stream.flush()

    def should_stop() -> str | None:
        stop = args.folder / "stop"
        return stop.read_text() if stop.exists() else None

    try:
        ended = run(
            recipe, sink, should_stop, out_dir=args.out, model_dir=args.model_dir, context=context
        )
    finally:
        # The sharded model's modules and hooks form reference cycles that hold the process
        # group: free them while the group is still up, then take it down.
        gc.collect()
        distributed.shutdown()
    _write_atomically(args.folder / f"ended-{context.rank}.json", ended.to_json())
    suffix = f": {ended.error}" if ended.error else ""
    print(f"rank {context.rank}: run {ended.status} after step {ended.step}{suffix}", flush=True)
    return 0


if __name__ == "__main__":
    code = rank_main()
    # The rank's work is done and reported (its end file is written, its output flushed). The
    # interpreter's own teardown can still abort in a process-group thread's C++ destructor
    # ("terminate called without an active exception", seen with gloo under load), which would
    # turn a finished rank into a failed one: leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
