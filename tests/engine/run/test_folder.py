"""Reading a headless run's folder back: events with their seq and exact images; every
problem named by file and line before anything is used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import events
from engine.run.folder import RunFolderError, read_events, scan
from engine.run.jsonl_sink import JsonlSink


def write_run(out: Path, *, ended: bool = True) -> np.ndarray:
    sink = JsonlSink(out)
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    sink(events.RunStarted(recipe={"run": {"max_steps": 1}}, layout={}, time=100.0))
    sample = events.Sample(
        sample_index=0, seed=5, image=image, reward=0.5, reward_components={}, advantage=0.0
    )
    group = events.PromptGroup(group_index=0, prompt="p", samples=(sample,))
    sink(
        events.RolloutFinished(
            step=0, rollout_index=0, rollout_seed=1, sde_window=(0,), groups=(group,), time=101.0
        )
    )
    if ended:
        sink(events.RunEnded(status="failed", step=0, error="boom", time=102.0))
    return image


def test_scan_and_read(tmp_path: Path) -> None:
    image = write_run(tmp_path)
    summary = scan(tmp_path)
    assert (summary.events, summary.status, summary.error) == (3, "failed", "boom")
    assert (summary.started, summary.ended, summary.recipe) == (
        100.0,
        102.0,
        {"run": {"max_steps": 1}},
    )
    read = list(read_events(tmp_path))
    assert [seq for seq, _ in read] == [1, 2, 3]
    rollout = read[1][1]
    assert isinstance(rollout, events.RolloutFinished)
    assert np.array_equal(rollout.groups[0].samples[0].image, image)


def test_a_run_without_its_end_was_interrupted(tmp_path: Path) -> None:
    write_run(tmp_path, ended=False)
    summary = scan(tmp_path)
    assert (summary.status, summary.ended) == ("interrupted", None)


def rewrite(folder: Path, line: int, change) -> None:
    lines = (folder / "events.jsonl").read_text().splitlines()
    lines[line - 1] = change(lines[line - 1])
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("line", "change", "message"),
    [
        (2, lambda text: text[:-5], r"line 2 is not a valid event \(JSONDecodeError"),
        (3, lambda text: text.replace('"seq":3', '"seq":2'), r"line 3 has seq 2 after 2"),
        (3, lambda text: text.replace('"run_ended"', '"run_over"'), r"line 3 .*unknown event"),
        (
            2,
            lambda text: text.replace("images/0000002-0000.png", "../outside.png"),
            r"line 2 names image \.\./outside\.png, which is not a file inside",
        ),
        (1, lambda text: text.replace('"run_started"', '"log_line"'), r"line 1 is not a valid"),
    ],
)
def test_problems_name_their_line(tmp_path: Path, line: int, change, message: str) -> None:
    write_run(tmp_path / "run")
    (tmp_path / "outside.png").write_bytes((tmp_path / "run/images/0000002-0000.png").read_bytes())
    rewrite(tmp_path / "run", line, change)
    with pytest.raises(RunFolderError, match=message):
        scan(tmp_path / "run")


def test_a_folder_without_run_started(tmp_path: Path) -> None:
    JsonlSink(tmp_path)(events.LogLine(level="info", message="hello"))
    with pytest.raises(RunFolderError, match="has no run_started event"):
        scan(tmp_path)
    (tmp_path / "events.jsonl").write_text(json.dumps({"seq": 1}) + "\n")
    with pytest.raises(RunFolderError, match="line 1 is not a valid event"):
        scan(tmp_path)
