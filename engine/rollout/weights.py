"""Weights on disk for rollout servers: what the trainer saves, what a server loads, and the
checksum both sides compare.

Two kinds, as sglang 0.5.23 loads them (docs/sglang.md): LoRA adapters in diffusers' LoRA
format (``pytorch_lora_weights.safetensors``, what ``POST /v1/set_lora`` reads), and a full
transformer as ``<dir>/transformer/*.safetensors`` (what ``POST /update_weights_from_disk``
with ``target_modules=["transformer"]`` reads). The checksum is sglang's
``compute_weights_checksum``: SHA-256 over the parameters sorted by name, each name's bytes then
its tensor's raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from engine.parallel.fsdp import whole_tensor
from engine.policy import ADAPTER, Policy

LORA_FILE = "pytorch_lora_weights.safetensors"
FULL_FILE = "diffusion_pytorch_model.safetensors"
#: The module sglang updates and checksums; the only one the trainer changes.
MODULE = "transformer"


class SavedWeights(NamedTuple):
    """A folder a server can load, and how."""

    #: ``lora`` (adapters only) or ``full`` (every transformer weight).
    kind: Literal["lora", "full"]
    #: The folder to name in the load request.
    path: Path
    #: ``weights_checksum`` of the trainer's transformer after the load.
    checksum: str


def sync_folder(root: Path, step: int) -> Path:
    """The folder of the weights synced after ``step``: one per sync, since sglang reloads a
    LoRA adapter only when its path changes (docs/sglang.md)."""
    return root / f"step-{step:08d}"


def remove_older_syncs(root: Path, kept: Path) -> None:
    """Delete every sync folder under ``root`` but ``kept`` (the servers' current weights)."""
    for folder in root.glob("step-*"):
        if folder != kept and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def weights_checksum(module: torch.nn.Module) -> str:
    """SHA-256 hex digest of ``module``'s parameters (sglang's ``compute_weights_checksum``)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters(), key=lambda item: item[0]):
        _hash(digest, name, tensor)
    return digest.hexdigest()


def save_weights(policy: Policy, folder: Path, *, write: bool = True) -> SavedWeights | None:
    """Write what a server needs to match ``policy``: its adapters, or for a full fine-tune
    the whole transformer (full Qwen-Image weights are ~40 GB: prefer LoRA on real models), in
    the model's dtype.

    With the transformer sharded by FSDP every rank must call it: each parameter is gathered
    whole in turn, in the same order on every rank, and only the rank with ``write`` keeps it
    (one whole tensor at a time on the device), writes the files and gets the ``SavedWeights``;
    the others get None.
    """
    transformer = policy.model.transformer
    # A server holds the model in its dtype: float32 master weights travel rounded to it (what
    # the trainer's autocast computes with too), and the checksum is over what the server holds.
    dtype = policy.model.dtype
    digest = hashlib.sha256()
    kept: dict[str, torch.Tensor] = {}
    for name, param in sorted(transformer.named_parameters(), key=lambda item: item[0]):
        whole = whole_tensor(param.detach())
        if not write:
            continue
        whole = whole.cpu().to(dtype if whole.is_floating_point() else whole.dtype).contiguous()
        _hash(digest, name, whole)
        if policy.full or param.requires_grad:
            kept[name] = whole
    if not write:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    kind: Literal["lora", "full"] = "full" if policy.full else "lora"
    if policy.full:
        # Buffers are never sharded: the module's state dict holds them as they are.
        buffers = {
            name: value.detach().cpu().contiguous()
            for name, value in transformer.state_dict().items()
            if name not in kept
        }
        (folder / MODULE).mkdir(exist_ok=True)
        save_file({**kept, **buffers}, str(folder / MODULE / FULL_FILE))
    else:
        _save_adapter(transformer, kept, folder / LORA_FILE)
    return SavedWeights(kind, folder, digest.hexdigest())


def _save_adapter(
    transformer: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path
) -> None:
    """The adapter file diffusers' ``save_lora_adapter`` writes (peft's names without the
    adapter's, its LoraConfig as metadata), from whole ``weights`` rather than the module's own
    state dict, which FSDP holds sharded."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from peft.utils import get_peft_model_state_dict

    config = transformer.peft_config[ADAPTER].to_dict()  # type: ignore[index, union-attr]
    plain = {key: list(value) if isinstance(value, set) else value for key, value in config.items()}
    adapter = get_peft_model_state_dict(transformer, state_dict=weights, adapter_name=ADAPTER)
    metadata = {
        "format": "pt",
        LORA_ADAPTER_METADATA_KEY: json.dumps(plain, indent=2, sort_keys=True),
    }
    save_file(adapter, str(path), metadata=metadata)


def _hash(digest: Any, name: str, tensor: torch.Tensor) -> None:
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def load_full(transformer: torch.nn.Module, folder: Path) -> None:
    """Copy ``folder/transformer/*.safetensors`` into ``transformer``; every name must match.

    Raises ``ValueError`` naming what is missing or does not fit, before changing anything.
    """
    files = sorted((folder / MODULE).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder / MODULE} holds no .safetensors file")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    state = transformer.state_dict()
    missing, extra = sorted(set(state) - set(weights)), sorted(set(weights) - set(state))
    if missing or extra:
        raise ValueError(f"weights do not fit the transformer: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")  # fmt: skip
    for name, value in weights.items():
        if value.shape != state[name].shape:
            raise ValueError(f"{name} has shape {list(value.shape)}, the transformer "
                             f"{list(state[name].shape)}")  # fmt: skip
    transformer.load_state_dict(weights)


def load_lora(transformer: torch.nn.Module, folder: Path, nickname: str) -> None:
    """Load the adapters saved in ``folder`` as ``nickname``, replacing any of that name."""
    if not (folder / LORA_FILE).is_file():
        raise ValueError(f"{folder} has no {LORA_FILE}")
    peft_config = getattr(transformer, "peft_config", None) or {}
    if nickname in peft_config:
        transformer.delete_adapters(nickname)  # type: ignore[operator]
    transformer.load_lora_adapter(  # type: ignore[operator]
        str(folder), adapter_name=nickname, weight_name=LORA_FILE, prefix=None
    )
