"""The tiny model on disk: a diffusers-style directory whose every file a checksum list pins.

Layout (``model_index.json`` names the components as a diffusers pipeline directory does)::

    model_index.json            _class_name GroupwiseTinyPipeline and its components
    transformer/                SD3Transformer2DModel.save_pretrained (config + safetensors)
    text_encoder/               config.json + model.safetensors of TinyTextEncoder
    scheduler/                  FlowMatchEulerDiscreteScheduler.save_pretrained
    SHA256SUMS                  "<sha256>  <path>" per file, as sha256sum writes it

The shipped copy lives in ``engine/models/tiny/weights`` and is made by ``python -m
engine.models.tiny.make_weights``; loading refuses any file whose sha256 differs from the list.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from safetensors.torch import load_file, save_file

from engine.models.tiny.model import TinyModel
from engine.models.tiny.text import TEXT_ENCODER_ENTRY, TinyTextConfig, TinyTextEncoder

#: Where the shipped weights live.
BUILTIN_DIR = Path(__file__).parent / "weights"
#: The ``_class_name`` of the tiny model's ``model_index.json``.
PIPELINE_CLASS = "GroupwiseTinyPipeline"
CHECKSUMS = "SHA256SUMS"
_REMAKE = "restore it from git or rebuild it with `python -m engine.models.tiny.make_weights`"


class TinyWeightsError(ValueError):
    """The tiny model's directory is incomplete or a file does not match its checksum."""


def save_tiny(model: TinyModel, directory: str | Path) -> None:
    """Write ``model`` in the layout above, checksums last."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": PIPELINE_CLASS,
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "text_encoder": list(TEXT_ENCODER_ENTRY),
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    transformer: Any = model.transformer
    transformer.save_pretrained(root / "transformer", safe_serialization=True)
    model.scheduler.save_pretrained(root / "scheduler")
    encoder_dir = root / "text_encoder"
    encoder_dir.mkdir(exist_ok=True)
    config = model.text_encoder.config.to_dict()
    (encoder_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {key: value.contiguous() for key, value in model.text_encoder.state_dict().items()}
    save_file(state, encoder_dir / "model.safetensors")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{_sha256(p)}  {p.relative_to(root).as_posix()}" for p in files]
    (root / CHECKSUMS).write_text("\n".join(lines) + "\n")


def load_tiny(
    directory: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TinyModel:
    """Load the tiny model from ``directory`` (default: the shipped weights).

    Every file listed in SHA256SUMS is checked first; raises ``TinyWeightsError`` naming the
    file when one is missing or differs.
    """
    root = BUILTIN_DIR if directory is None else Path(directory)
    verify_checksums(root)
    transformer = SD3Transformer2DModel.from_pretrained(root / "transformer", torch_dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler")
    config = json.loads((root / "text_encoder" / "config.json").read_text())
    encoder = TinyTextEncoder(TinyTextConfig(**config))
    encoder.load_state_dict(load_file(root / "text_encoder" / "model.safetensors"))
    encoder.requires_grad_(False)
    return TinyModel(transformer.to(device), encoder.to(device=device, dtype=dtype), scheduler)


def verify_checksums(root: Path) -> None:
    """Raise ``TinyWeightsError`` unless every file of SHA256SUMS exists with its sha256."""
    listing = root / CHECKSUMS
    if not listing.is_file():
        raise TinyWeightsError(f"{listing} is missing: {_REMAKE}")
    for line in listing.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = root / name
        if not path.is_file():
            raise TinyWeightsError(f"tiny model file {path} is missing: {_REMAKE}")
        if _sha256(path) != expected:
            raise TinyWeightsError(
                f"tiny model file {path} does not match its sha256 in {listing} "
                f"(corrupted or changed): {_REMAKE}"
            )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
