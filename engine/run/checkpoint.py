"""Checkpoints: written atomically, verified on load, never lost to a failed save.

A checkpoint is a folder ``OUT/checkpoints/step-000010/`` holding the trainable weights
(``model.safetensors``: the adapter, or the whole model for a full fine-tune), the optimizer
state (``optimizer.pt``), the RNG states (``rng.pt``) and ``meta.json`` (step, recipe, SHA-256
of each file). It is written under a temporary name and renamed into place, and only then does
``OUT/checkpoints/latest`` (itself replaced atomically) point at it: a crash mid-save leaves the
previous checkpoint as the latest one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine.recipe import drop_retired, flatten

FORMAT = 1
FILES = ("model.safetensors", "optimizer.pt", "rng.pt")
#: Settings a resumed run may change: how long it runs, how often it reports, and whether its
#: ranks shard the model (a checkpoint holds whole weights either way).
RESUMABLE_CHANGES = ("run.max_steps", "run.checkpoint_every", "run.eval_every", "layout.fsdp")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class CheckpointState:
    """Everything a run needs to continue exactly where it stopped."""

    #: Optimizer steps taken.
    step: int
    #: The run's recipe (``Recipe.to_dict()``).
    recipe: dict[str, Any]
    #: Trainable weights by parameter name.
    model: dict[str, torch.Tensor]
    #: ``optimizer.state_dict()``.
    optimizer: dict[str, Any]
    #: RNG states by name (``torch`` and, on GPUs, ``cuda``).
    rng: dict[str, Any]


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: Path, state: CheckpointState) -> Path:
    """Write ``state`` and make it the latest checkpoint; returns its folder."""
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"step-{state.step:06d}"
    temporary = root / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in state.model.items()}, temporary / FILES[0]
    )
    torch.save(state.optimizer, temporary / FILES[1])
    torch.save(state.rng, temporary / FILES[2])
    meta = {
        "format": FORMAT,
        "step": state.step,
        "recipe": state.recipe,
        "sha256": {name: _sha256(temporary / name) for name in FILES},
    }
    _write_synced(temporary / "meta.json", json.dumps(meta, indent=1))
    if folder.exists():
        # Re-saving a step after a resume: the new copy replaces the old only once complete.
        stale = root / f".{folder.name}.old-{os.getpid()}"
        folder.rename(stale)
        temporary.rename(folder)
        shutil.rmtree(stale)
    else:
        temporary.rename(folder)
    _write_synced(root / ".latest.tmp", folder.name)
    os.replace(root / ".latest.tmp", root / "latest")
    return folder


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder ``latest`` points at, or None when the run has no checkpoint yet."""
    pointer = checkpoint_root(out_dir) / "latest"
    if not pointer.exists():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not folder.is_dir():
        raise CheckpointError(
            f"{pointer} points at {folder.name}, which does not exist: point it at an existing "
            "step-* folder or delete it to start over"
        )
    return folder


def load_checkpoint(folder: Path, recipe: dict[str, Any]) -> CheckpointState:
    """Read and verify a checkpoint of a run with ``recipe``.

    Raises ``CheckpointError`` when a file is missing or corrupt (its SHA-256 differs) or when
    the checkpoint belongs to a different recipe (other than the settings in
    ``RESUMABLE_CHANGES``).
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {folder} has no readable meta.json ({error})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {folder} has format {meta.get('format')}, not {FORMAT}")
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}: it is incomplete")
        if _sha256(path) != meta["sha256"].get(name):
            raise CheckpointError(
                f"checkpoint {folder} is corrupt: {name} does not match its SHA-256; "
                "delete this folder and point checkpoints/latest at an older one"
            )
    differences = recipe_differences(meta["recipe"], recipe)
    if differences:
        raise CheckpointError(
            f"checkpoint {folder} belongs to another recipe ({', '.join(differences)} differ): "
            "resume with the recipe it was saved with, or start a new run"
        )
    return CheckpointState(
        step=int(meta["step"]),
        recipe=meta["recipe"],
        model=load_file(folder / FILES[0]),
        optimizer=torch.load(folder / FILES[1], weights_only=True),
        rng=torch.load(folder / FILES[2], weights_only=True),
    )


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` (step, recipe, SHA-256 of each file), once its weights file
    is known to be there; nothing is hashed. Raises ``CheckpointError`` like ``load_checkpoint``."""
    try:
        meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {folder} has no readable meta.json ({error})") from None
    # There, not a regular file: the weights may come through a pipe (the web's tests send
    # them that way to see when the server reads them).
    if not (folder / FILES[0]).exists():
        raise CheckpointError(f"checkpoint {folder} is missing {FILES[0]}: it is incomplete")
    return meta


def load_weights(folder: Path) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """The step, recipe and verified trainable weights of a checkpoint, without its optimizer
    state (what an export needs). Raises ``CheckpointError`` like ``load_checkpoint``."""
    meta = read_meta(folder)
    path = folder / FILES[0]
    if _sha256(path) != meta.get("sha256", {}).get(FILES[0]):
        raise _corrupt(folder)
    return int(meta["step"]), meta["recipe"], load_file(path)


def verified_weights(folder: Path, meta: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of ``folder``'s weights file in chunks of 1 MiB, hashed as they are read.

    For weights too large to read twice (a full fine-tune's gigabytes, streamed into an export):
    the check comes after the last chunk, where a mismatch with ``meta``'s SHA-256 raises
    ``CheckpointError``, so a consumer that stops on it never completes a corrupt copy.
    """
    digest = hashlib.sha256()
    with (folder / FILES[0]).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            yield block
    if digest.hexdigest() != meta.get("sha256", {}).get(FILES[0]):
        raise _corrupt(folder)


def _corrupt(folder: Path) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {folder} is corrupt: {FILES[0]} does not match its SHA-256; "
        "export an older checkpoint"
    )


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted paths whose values differ, ignoring ``RESUMABLE_CHANGES`` and the settings
    retired since ``saved`` was written."""
    flat_saved, flat_current = flatten(drop_retired(saved)), flatten(current)
    keys = sorted(set(flat_saved) | set(flat_current))
    return [
        key
        for key in keys
        if key not in RESUMABLE_CHANGES and flat_saved.get(key) != flat_current.get(key)
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
