"""The training loop over two gloo ranks (``engine.run.ranks``) against one process.

The module's runs happen once (``runs``): a tiny-color recipe with num_gpus=1 in this process and
with num_gpus=2 over two rank subprocesses, each for one rollout (2 optimizer steps, evaluation and
checkpoint at step 2), then each resumed from its checkpoint to step 4. The two-rank runs: ``two``
shards the transformer with FSDP (the default) in both phases; ``replicas`` keeps a whole copy on
each rank for the first rollout and resumes that checkpoint sharded.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import events
from engine.cli.main import EXIT_INVALID, main
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.run.loop import run
from engine.run.ranks import LOG_DIR, rank_problem, train
from tests.engine.recording import Recorder, weights
from tests.recipes import TINY_COLOR_TWO_RANKS
from tests.waiting import wait_until

# P=2 x G=4, two optimizer steps of 4 samples: 2 per rank per step, in 2-sample x 1-step tiles.
SMALL = {
    **TINY_COLOR_TWO_RANKS,
    "eval_num_inference_steps": 4,
    "eval_prompts": ["a red image"],
    "max_steps": 2,
}
# As in test_distributed.py: only the order in which tile gradients are summed differs (fp32).
ATOL, RTOL = 1e-6, 1e-5
DEADLINE = 120.0


def recipe(gpus: int, **changes: Any):
    return apply_overrides(PRESETS["tiny-color"].recipe, {**SMALL, "num_gpus": gpus, **changes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("runs")
    seen: dict[str, Any] = {"root": root}
    for name, gpus, fsdp in (
        ("one", 1, (True, True)),
        ("two", 2, (True, True)),
        ("replicas", 2, (False, True)),
    ):
        for (phase, steps), sharded in zip((("first", 2), ("resumed", 4)), fsdp, strict=True):
            recorder = Recorder()
            # The reference trains in this process (engine.run.loop.run), the others over two ranks.
            start = run if gpus == 1 else train
            ended = start(
                recipe(gpus, max_steps=steps, fsdp=sharded), recorder, out_dir=root / name
            )
            seen[f"{name}-{phase}"] = recorder
            assert ended == recorder.events[-1]
    return seen


def _numbers(recorder: Recorder) -> dict[str, Any]:
    return {
        "rewards": [
            [(s.seed, s.reward, s.advantage) for g in e.groups for s in g.samples]
            for e in recorder.of(events.RolloutFinished)
        ],
        "steps": [e.to_dict() for e in recorder.of(events.TrainStepFinished)],
        "eval": [e.reward_mean for e in recorder.of(events.EvaluationFinished)],
        "replay": [
            next(c.value for c in health.checks if c.name == "replay")
            for health in recorder.of(events.Health)
        ],
    }


@pytest.mark.parametrize("name", ["two", "replicas"])
@pytest.mark.parametrize("phase", ["first", "resumed"])
def test_two_ranks_report_what_one_process_reports_once(
    runs: dict[str, Any], phase: str, name: str
) -> None:
    one, two = runs[f"one-{phase}"], runs[f"{name}-{phase}"]
    # One copy of every event, in the same order.
    assert [e.type for e in two.events] == [e.type for e in one.events]
    assert [e.type for e in one.events if e.type != "log_line"] == [
        "run_started",
        "rollout_finished",
        "train_step_finished",
        "train_step_finished",
        "health",
        "evaluation_finished",
        "throughput",
        "checkpoint_saved",
        "run_ended",
    ]
    last = two.events[-1]
    assert (last.status, last.step) == ("finished", 2 if phase == "first" else 4), last.error
    assert two.of(events.RunStarted)[0].recipe["layout"]["num_gpus"] == 2
    # The ranks generate, each its share, what one process does: the same samples, rewards and
    # advantages.
    mine, reference = _numbers(two), _numbers(one)
    assert mine["rewards"] == reference["rewards"]
    image = two.of(events.RolloutFinished)[0].groups[0].samples[0].image
    assert image.shape == one.of(events.RolloutFinished)[0].groups[0].samples[0].image.shape
    for got, want in zip(mine["steps"], reference["steps"], strict=True):
        for field in ("step", "rollout_index"):
            assert got[field] == want[field]
        for field in ("loss", "policy_loss", "kl", "clip_fraction", "ratio_mean", "grad_norm"):
            assert got[field] == pytest.approx(want[field], rel=RTOL, abs=ATOL), field
    assert mine["eval"] == pytest.approx(reference["eval"], rel=RTOL, abs=ATOL)
    # Replays are exact or off by an ulp of fp32 near 1 (1.2e-7): the ranks replay what they
    # generated themselves, one process with another thread count.
    assert mine["replay"] == pytest.approx(reference["replay"], abs=2.5e-7)


@pytest.mark.parametrize("name", ["two", "replicas"])
@pytest.mark.parametrize("step", [2, 4])
def test_two_ranks_end_with_the_weights_of_one_process(
    runs: dict[str, Any], step: int, name: str
) -> None:
    root = runs["root"]
    one, two = weights(root / "one", step), weights(root / name, step)
    start = weights(root / "one", 2) if step == 4 else None
    assert two.keys() == one.keys()
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=ATOL, rtol=RTOL)
    if start is not None:
        # The resumed rollouts moved the weights far beyond the tolerance: rank 1 resumed too,
        # else its gradients (from the base weights) would have pulled the average away.
        moved = max((value - start[name]).abs().max().item() for name, value in one.items())
        assert moved > 100 * ATOL


def test_the_resumed_run_starts_at_the_checkpoint(runs: dict[str, Any]) -> None:
    resumed = runs["two-resumed"]
    assert resumed.of(events.RunStarted)[0].start_step == 2
    assert [e.message for e in resumed.of(events.LogLine)] == ["resumed from step-000002"]
    first = runs["two-first"].of(events.RolloutFinished)[0]
    assert resumed.of(events.RolloutFinished)[0].rollout_seed != first.rollout_seed
    # Both ranks said how their runs ended, twice (a log per rank, appended across resumes).
    for rank in (0, 1):
        log = (runs["root"] / "two" / LOG_DIR / f"rank-{rank}.log").read_text()
        assert f"rank {rank}: run finished after step 2" in log
        assert f"rank {rank}: run finished after step 4" in log


def test_a_cancel_on_rank_zero_stops_both_ranks(tmp_path: Path) -> None:
    seen = Recorder()
    started = time.monotonic()
    ended = train(
        recipe(2, max_steps=40),
        seen,
        lambda: "cancelled" if seen.of(events.RolloutFinished) else None,
        out_dir=tmp_path,
    )
    # The answer reaches rank 0 within a poll (0.5 s) and stops it at its next check: a rollout
    # or two later on a fast machine (a 2-step rollout can take less than a poll), never at 40.
    rollouts = len(seen.of(events.RolloutFinished))
    assert ended.status == "cancelled" and ended.step < 40
    assert ended.step <= 2 * rollouts and rollouts < 20
    assert [e.type for e in seen.events].count("run_ended") == 1
    for rank in (0, 1):
        # Each rank ended the run itself (a rank killed after the grace period writes nothing).
        log = (tmp_path / LOG_DIR / f"rank-{rank}.log").read_text()
        assert f"rank {rank}: run cancelled after step {ended.step}" in log
    assert time.monotonic() - started < DEADLINE


def test_a_rank_that_dies_fails_the_run_and_is_named(tmp_path: Path) -> None:
    seen = Recorder()
    killed: list[int] = []

    def kill_rank_one() -> str | None:
        if seen.of(events.RolloutFinished) and not killed:
            pid = _rank_pid(os.getpid(), 1)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return None

    started = time.monotonic()
    ended = train(
        recipe(2, max_steps=40),
        seen,
        kill_rank_one,
        out_dir=tmp_path,
    )
    assert killed
    assert ended.status == "failed"
    assert (ended.error or "").startswith("rank 1 of 2 failed first: exited with code -9")
    assert seen.events[-1] == ended
    assert time.monotonic() - started < DEADLINE


def test_rank_counts_other_than_one_or_num_gpus_are_refused(tmp_path: Path) -> None:
    assert rank_problem(recipe(2), 2) is None and rank_problem(recipe(2), 1) is None
    assert rank_problem(recipe(2), 3) == (
        "3 processes but layout.num_gpus=2: start 2 (or 1, which trains every rank's share in "
        "one process and takes the same steps)"
    )
    out = io.StringIO()
    argv = ["train", "--preset", "tiny-color", "--set", "num_gpus=2", "--nproc", "4"]
    assert main([*argv, "--out", str(tmp_path)], out) == EXIT_INVALID
    assert out.getvalue().startswith("--nproc: 4 processes but layout.num_gpus=2")
    assert not (tmp_path / "events.jsonl").exists()


def test_ranks_die_with_their_supervisor(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from engine.overrides import apply_overrides
        from engine.presets import PRESETS
        from engine.run.ranks import train
        recipe = apply_overrides(PRESETS["tiny-color"].recipe, {{**{SMALL!r}, "num_gpus": 2,
                                 "max_steps": 400}})
        train(recipe, lambda event: None, out_dir=Path({str(tmp_path)!r}))
        """
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], cwd=Path.cwd())
    try:
        ranks = wait_until(lambda: _ranks_of(supervisor.pid), DEADLINE, what="the ranks to start")
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        wait_until(lambda: not any(_alive(pid) for pid in ranks), DEADLINE, what="the ranks to die")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _ranks_of(pid: int) -> list[int] | None:
    """The pids of ``pid``'s two rank processes once both run ``engine.run.ranks``."""
    ranks = [
        child
        for child in _children(pid)
        if b"engine.run.ranks" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    return ranks if len(ranks) == 2 else None


def _rank_pid(pid: int, rank: int) -> int:
    for child in _children(pid):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            # A short-lived child (a compiler, a helper) ended between listing and reading.
            continue
        if f"RANK={rank}".encode() in environ and b"engine.run.ranks" in command:
            return child
    raise AssertionError(f"no rank {rank} among the children of {pid}")


def _alive(pid: int) -> bool:
    """Running (a zombie no init reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
