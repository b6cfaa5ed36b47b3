"""The headless CLI's validate and layout commands, end to end in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.recipe import Recipe

REPO = Path(__file__).resolve().parents[3]


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_a_preset_and_a_file(tmp_path: Path) -> None:
    lines = engine("validate", "--preset", "tiny-color").stdout.splitlines()
    assert lines[0] == "valid"
    # Then the memory plan: its total, and one line per item with its bar.
    assert lines[2].startswith("memory per GPU: ") and "of 80 GB (fits; peak while" in lines[2]
    assert [line.split()[0] for line in lines[3:6]] == ["DiT", "text", "VAE"]
    recipe = tmp_path / "r.toml"
    Recipe().save(recipe)
    assert engine("validate", str(recipe)).returncode == 0


def test_invalid_recipe_exits_2_with_every_problem() -> None:
    result = engine(
        "validate",
        "--preset",
        "tiny-color",
        "--set",
        "diffusion_microgroup_size=3",
        "--set",
        "lr=-1",
    )
    assert result.returncode == 2
    assert "invalid recipe: 2 problem(s)" in result.stdout
    assert (
        "layout.diffusion_microgroup_size: n_samples_per_prompt=8 is not a multiple"
        in result.stdout
    )
    assert "optimiser.lr" in result.stdout


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    assert engine("validate", "--preset", "tiny-color", "--set", "noequals").returncode == 2
    assert engine("validate", str(tmp_path / "missing.toml")).returncode == 2
    assert engine("layout").returncode == 2


def test_layout_table() -> None:
    result = engine("layout", "--preset", "ocr-qwen-image-2gpu")
    assert result.returncode == 0
    table, memory = result.stdout.split("\n\n")
    rows = dict(line.split(None, 1) for line in table.splitlines())
    # P=16 prompts x G=16 samples; M=16 -> one request per prompt; 2 optimizer steps.
    assert rows["samples_per_rollout"] == "256"
    assert rows["requests_per_rollout"] == "16"
    assert rows["optimizer_steps_per_rollout"] == "2"
    lines = memory.splitlines()
    assert lines[0].startswith("memory per GPU: ")
    assert "of 80 GB (fits; peak while generating; qwen-image from Qwen/Qwen-Image)" in lines[0]
    # Items outside the peak phase are marked "-"; the DiT's line has a bar of 21.8 / 80 x 40.
    marked = {line[2:].split("  ")[0].strip(): line[0] for line in lines[1:]}
    assert marked["training activations"] == "-"
    assert marked["text encoders"] == marked["rollout activations"] == marked["DiT weights"] == " "
    dit = next(line for line in lines if line.startswith("  DiT weights"))
    assert " 21.8 GB  " + "#" * 11 + " " in dit


def test_layout_json_holds_the_memory_plan() -> None:
    import json

    result = engine("layout", "--preset", "ocr-qwen-image-2gpu", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["samples_per_rollout"] == 256
    memory = report["memory"]
    names = [item["name"] for item in memory["items"]]
    assert names == [
        "DiT weights", "text encoders", "VAE", "trainable weights", "gradients",
        "optimizer state", "reference model", "rollout store", "rollout activations",
        "colocated server", "training activations", "headroom",
    ]  # fmt: skip
    counted = sum(item["gb"] for item in memory["items"] if item["counted"])
    assert memory["total_gb"] == pytest.approx(counted, abs=0.05)
    assert memory["fits"] is True and memory["gpu_memory_gb"] == 80.0
    encoders = memory["items"][1]
    assert (encoders["phase"], encoders["counted"]) == ("rollout", True)


def test_train_writes_events_images_and_checkpoints_then_resumes(tmp_path: Path) -> None:
    import json

    args = [
        "train", "--preset", "tiny-color", "--out", str(tmp_path),
        "--set", "rollout_batch_size=2", "--set", "n_samples_per_prompt=4",
        "--set", "diffusion_microgroup_size=4", "--set", "micro_batch_size_sample=4",
        "--set", "checkpoint_every=2", "--set", "eval_every=2",
    ]  # fmt: skip
    first = engine(*args, "--set", "max_steps=2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "run finished after step 2" in first.stdout
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    rollout = next(r for r in records if r["type"] == "rollout_finished")
    image = rollout["groups"][0]["samples"][0]["image"]
    assert (tmp_path / image).is_file() and image.endswith(".png")
    assert (tmp_path / "checkpoints" / "step-000002" / "model.safetensors").is_file()

    longer = engine(*args, "--set", "max_steps=4")
    assert longer.returncode == 0, longer.stdout + longer.stderr
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    restarts = [r["start_step"] for r in records if r["type"] == "run_started"]
    assert restarts == [0, 2], "the second command resumed from the step-2 checkpoint"

    invalid = engine(*args, "--set", "diffusion_microgroup_size=3")
    assert invalid.returncode == 2


def test_sweep_prints_a_row_per_size_and_writes_the_report(tmp_path: Path) -> None:
    import json

    from engine.sweep import SweepReport

    small = [
        "--preset", "tiny-color", "--set", "rollout_batch_size=1",
        "--set", "n_samples_per_prompt=4", "--set", "micro_batch_size_sample=4",
        "--set", "diffusion_microgroup_size=4", "--set", "num_inference_steps=4",
        "--set", "height=16", "--set", "width=16",
    ]  # fmt: skip
    out = tmp_path / "sweep.json"
    result = engine("sweep", *small, "--sizes", "2,4", "--rollouts", "1", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["M", "img/s", "fwd/s"]
    assert [line.split()[0] for line in lines[1:3]] == ["2", "4"]
    assert lines[1].split()[-1] == "yes" and lines[2].split()[-1] == "yes"
    report = SweepReport.from_dict(json.loads(out.read_text()))
    assert [row.microgroup_size for row in report.rows] == [2, 4]
    assert f"best M: {report.best_size} " in result.stdout

    invalid = engine("sweep", *small, "--sizes", "3", "--rollouts", "0")
    assert invalid.returncode == 2
    assert invalid.stdout.splitlines() == [
        "invalid recipe: 2 problem(s)",
        "  sizes: diffusion_microgroup_size=3 does not divide n_samples_per_prompt=4: "
        "use 1, 2 or 4",
        "  rollouts: rollouts=0: sweep at least 1, e.g. 2",
    ]
    assert engine("sweep", *small, "--sizes", "two").returncode == 2
