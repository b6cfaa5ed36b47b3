"""Checkpoints round-trip, refuse corruption and other recipes, and survive a failed save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engine.recipe import Recipe
from engine.run import checkpoint
from engine.run.checkpoint import (
    CheckpointError,
    CheckpointState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def state(step: int) -> CheckpointState:
    torch.manual_seed(step)
    rng = torch.get_rng_state()
    layer = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(layer.weight, float(step))
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return CheckpointState(
        step=step,
        recipe=Recipe().to_dict(),
        model=dict(layer.state_dict()),
        optimizer=optimizer.state_dict(),
        rng={"torch": rng},
    )


def test_round_trip_and_latest(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, state(1))
    saved = state(2)
    folder = save_checkpoint(tmp_path, saved)
    assert latest_checkpoint(tmp_path) == folder
    loaded = load_checkpoint(folder, Recipe().to_dict())
    assert loaded.step == 2
    assert torch.equal(loaded.model["weight"], saved.model["weight"])
    assert loaded.optimizer["state"][0]["step"] == torch.tensor(1.0)
    torch.manual_seed(2)
    assert torch.equal(loaded.rng["torch"], torch.get_rng_state())


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, state(1))
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt: model.safetensors"):
        load_checkpoint(folder, Recipe().to_dict())


def test_missing_file_and_meta(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, state(1))
    (folder / "rng.pt").unlink()
    with pytest.raises(CheckpointError, match=r"missing rng.pt"):
        load_checkpoint(folder, Recipe().to_dict())
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"no readable meta.json"):
        load_checkpoint(folder, Recipe().to_dict())


def test_other_recipe_is_refused_but_longer_runs_resume(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, state(1))
    other = Recipe().to_dict()
    other["optimiser"]["lr"] = 0.5
    with pytest.raises(CheckpointError, match=r"optimiser.lr differ"):
        load_checkpoint(folder, other)
    longer = Recipe().to_dict()
    longer["run"]["max_steps"] = 400
    assert load_checkpoint(folder, longer).step == 1


def test_failed_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = save_checkpoint(tmp_path, state(1))

    def broken_save(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match=r"disk full"):
        save_checkpoint(tmp_path, state(2))
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(good, Recipe().to_dict()).step == 1


def test_dangling_latest_pointer(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(1))
    (tmp_path / "checkpoints" / "latest").write_text("step-000009")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        latest_checkpoint(tmp_path)
