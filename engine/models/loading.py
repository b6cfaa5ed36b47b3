"""Load a ``FlowModel`` from a local diffusers directory, or the built-in tiny model.

Nothing is downloaded (DESIGN.md section 4): the directory comes from the recipe's
``model.path`` or, when that is empty, from ``GROUPWISE_MODEL_DIR`` as the web layer passes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.models.base import FlowModel

#: ``model_index.json``'s ``_class_name`` per family.
PIPELINE_CLASSES: dict[str, str] = {
    "sd3": "StableDiffusion3Pipeline",
    "qwen-image": "QwenImagePipeline",
    "flux": "FluxPipeline",
    "tiny": "GroupwiseTinyPipeline",
}


class ModelLoadError(ValueError):
    """The model directory is missing, unreadable or not of a supported family."""


def resolve_model_dir(path: str | Path | None, model_dir: str | Path | None) -> Path | None:
    """The directory to load: ``model.path`` if set, else ``GROUPWISE_MODEL_DIR``, else None
    (the built-in tiny model)."""
    chosen = path if path not in (None, "") else model_dir
    return None if chosen is None or chosen == "" else Path(chosen)


def load_model(
    family: str,
    directory: str | Path | None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FlowModel:
    """Load ``family``'s model from ``directory``; None means the built-in tiny model.

    Raises ``ModelLoadError`` naming model.path / GROUPWISE_MODEL_DIR when the directory is
    missing, and model.family when its ``model_index.json`` is of another or unknown family.
    """
    if family not in PIPELINE_CLASSES:
        raise ModelLoadError(
            f"model.family='{family}' cannot be loaded: use one of {', '.join(PIPELINE_CLASSES)}"
        )
    if directory is None:
        if family != "tiny":
            raise ModelLoadError(
                f"family='{family}' has no built-in weights: set model.path in the recipe or "
                "GROUPWISE_MODEL_DIR to a local diffusers directory"
            )
        from engine.models.tiny.weights import load_tiny

        return load_tiny(device=device, dtype=dtype)
    root = Path(directory)
    found = _pipeline_class(root)
    if found != PIPELINE_CLASSES[family]:
        known = {name: fam for fam, name in PIPELINE_CLASSES.items()}
        hint = (
            f"it holds a {known[found]} model: set model.family='{known[found]}'"
            if found in known
            else f"supported are {', '.join(PIPELINE_CLASSES.values())}"
        )
        raise ModelLoadError(
            f"{root}/model_index.json names {found}, not {PIPELINE_CLASSES[family]} "
            f"(model.family='{family}'): {hint}"
        )
    if family == "tiny":
        from engine.models.tiny.weights import load_tiny

        return load_tiny(root, device=device, dtype=dtype)
    return _load_pipeline_model(family, root, device, dtype)


def _pipeline_class(root: Path) -> str:
    """``_class_name`` of ``root/model_index.json``, with errors that say what to fix."""
    if not root.is_dir():
        raise ModelLoadError(
            f"model directory {root} does not exist: fix model.path in the recipe or "
            "GROUPWISE_MODEL_DIR"
        )
    index = root / "model_index.json"
    try:
        data: Any = json.loads(index.read_text(encoding="utf-8"))
        return str(data["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"{index} is missing or unreadable ({error}): point model.path or "
            "GROUPWISE_MODEL_DIR at a diffusers pipeline directory (save_pretrained's layout)"
        ) from None


def _load_pipeline_model(
    family: str, root: Path, device: str | torch.device, dtype: torch.dtype
) -> FlowModel:
    # Imported per family: each pipeline module pulls in its own text encoders.
    if family == "sd3":
        from diffusers import StableDiffusion3Pipeline

        from engine.models.sd3 import SD3Model

        return SD3Model(_from_pretrained(StableDiffusion3Pipeline, root, device, dtype))
    if family == "flux":
        from diffusers import FluxPipeline

        from engine.models.flux import FluxModel

        return FluxModel(_from_pretrained(FluxPipeline, root, device, dtype))
    from diffusers import QwenImagePipeline

    from engine.models.qwen_image import QwenImageModel

    return QwenImageModel(_from_pretrained(QwenImagePipeline, root, device, dtype))


def _from_pretrained(cls: Any, root: Path, device: str | torch.device, dtype: torch.dtype) -> Any:
    pipeline = cls.from_pretrained(root, torch_dtype=dtype, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)
