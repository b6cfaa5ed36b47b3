"""A run's trained weights as files others can load: ``export_weights(checkpoint, scratch)``.

What a checkpoint holds becomes, by the recipe's ``model.lora_target``:

- LoRA (``attn``, ``attn+mlp``): ``adapter/pytorch_lora_weights.safetensors``, written by the
  family's diffusers LoRA loader mixin itself (``save_lora_weights``), so that
  ``pipe.load_lora_weights("adapter")`` loads it with its rank and alpha;
- a full fine-tune of SD3.5 / FLUX / Qwen-Image: ``transformer.safetensors``, the DiT's weights
  by parameter name, streamed from the checkpoint as it is (no copy of a large file);
- the tiny model, either way: ``model/``, a whole tiny-model directory with the trained weights
  (a LoRA merged in), which ``engine.models.loading.load_model("tiny", "model")`` loads.

Each export also holds ``README.md`` (the loading snippet of ``engine.export.snippets``) and
``recipe.json``. Files that must be generated are written under ``scratch``, a directory the
caller owns and removes once the export is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from engine.export.snippets import ADAPTER_DIR, FULL_WEIGHTS, MODEL_DIR, loading_snippet
from engine.export.zipstream import ExportFile
from engine.policy import ADAPTER
from engine.recipe import ModelConfig, Recipe, drop_retired
from engine.run.checkpoint import FILES, load_weights, read_meta, verified_weights

#: The diffusers mixin whose ``save_lora_weights`` writes each family's LoRA files.
LORA_WRITERS = {
    "tiny": "SD3LoraLoaderMixin",
    "sd3": "SD3LoraLoaderMixin",
    "flux": "FluxLoraLoaderMixin",
    "qwen-image": "QwenImageLoraLoaderMixin",
}
#: The parts of a peft LoRA parameter name: ``<module>.lora_A.<adapter>.weight``.
_LORA_PARTS = ("lora_A", "lora_B")


@dataclass(frozen=True)
class WeightsExport:
    """What ``export_weights`` made: the files of the archive and how to load them."""

    #: Optimizer steps the checkpoint had taken.
    step: int
    #: The model family (``engine.models.families``).
    family: str
    #: ``lora``: an adapter (plus merged weights for the tiny model); ``full``: whole weights.
    kind: Literal["lora", "full"]
    #: The archive's members, README.md first.
    files: tuple[ExportFile, ...]
    #: The Python snippet that loads the export (also in README.md).
    snippet: str


def export_weights(
    checkpoint: Path,
    scratch: Path,
    *,
    folder: str,
    base_model: str | Path | None = None,
) -> WeightsExport:
    """The export of ``checkpoint`` (a ``checkpoints/step-*`` folder).

    ``folder`` is the name the archive unpacks to (the snippet refers to it); ``base_model``
    is the directory of the model the run trained when its recipe's ``model.path`` is empty
    (the web's ``GROUPWISE_MODEL_DIR``), None for the built-in tiny model. Raises
    ``engine.run.checkpoint.CheckpointError`` for a missing or corrupt checkpoint; the weights
    of a full fine-tune of a large family are checked only as the archive reads them, so their
    corruption raises it from the member's source, mid-archive.
    """
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    step, recipe_data = int(meta["step"]), meta["recipe"]
    # A checkpoint's recipe may predate settings retired since: an export only reads it.
    recipe = Recipe.from_dict(drop_retired(recipe_data))
    config = recipe.model
    base = config.path or base_model
    kind: Literal["lora", "full"] = "full" if config.lora_target == "full" else "lora"
    scratch = Path(scratch)
    files: list[ExportFile] = []
    if kind == "full" and config.family != "tiny":
        # A large model's weights go out as they are stored: read once, while they are sent,
        # and verified on the way (a corrupt file stops the archive before its end).
        weights_file = checkpoint / FILES[0]
        files.append(
            ExportFile(
                FULL_WEIGHTS,
                lambda: verified_weights(checkpoint, meta),
                size=weights_file.stat().st_size,
            )
        )
    else:
        _, _, weights = load_weights(checkpoint)
        adapter: dict[str, torch.Tensor] = {}
        if kind == "lora":
            adapter = lora_state_dict(weights)
            write_adapter(adapter, config, scratch / ADAPTER_DIR)
            files += _folder_files(scratch / ADAPTER_DIR, ADAPTER_DIR)
        if config.family == "tiny":
            full = weights if kind == "full" else None
            _write_tiny(full, adapter, config, base, scratch / MODEL_DIR)
            files += _folder_files(scratch / MODEL_DIR, MODEL_DIR)
    snippet = loading_snippet(recipe, folder, base_model=base)
    readme = _readme(recipe, step, kind, snippet, folder)
    return WeightsExport(
        step=step,
        family=config.family,
        kind=kind,
        files=(
            ExportFile("README.md", readme.encode()),
            ExportFile("recipe.json", (json.dumps(recipe_data, indent=1) + "\n").encode()),
            *files,
        ),
        snippet=snippet,
    )


def lora_state_dict(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The policy's adapter weights under diffusers' names: ``<module>.lora_A.weight``.

    Raises ``ValueError`` for a name that is not one of the run's LoRA weights (a checkpoint
    of a full fine-tune, or of another adapter).
    """
    renamed = {}
    for name, value in weights.items():
        parts = name.split(".")
        if len(parts) < 4 or parts[-3] not in _LORA_PARTS or parts[-2] != ADAPTER:
            raise ValueError(
                f"checkpoint weight {name!r} is not a LoRA weight of adapter {ADAPTER!r}: "
                "was the run a full fine-tune (model.lora_target='full')?"
            )
        renamed[".".join(parts[:-2] + parts[-1:])] = value
    return renamed


def adapted_modules(adapter: Mapping[str, torch.Tensor]) -> list[str]:
    """The modules an adapter (diffusers names) changes, sorted."""
    return sorted({name.rsplit(".", 2)[0] for name in adapter})


def merge_lora(
    base: Mapping[str, torch.Tensor], adapter: Mapping[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """``base`` with each adapted layer's weight W replaced by W + scale · B A.

    LoRA (Hu et al. 2021, eq. 3): h = W x + B A x, scaled by peft's alpha / r. The product is
    formed in float64 and rounded once to W's dtype, so the merged layer differs from the
    adapter's two-matmul path only by the rounding of that one sum.
    """
    merged = dict(base)
    for module in adapted_modules(adapter):
        key = f"{module}.weight"
        if key not in base:
            raise ValueError(f"the adapter changes {module}, which the base model does not have")
        down, up = adapter[f"{module}.lora_A.weight"], adapter[f"{module}.lora_B.weight"]
        delta = up.double() @ down.double()
        merged[key] = (base[key].double() + scale * delta).to(base[key].dtype)
    return merged


def write_adapter(adapter: Mapping[str, torch.Tensor], config: ModelConfig, out: Path) -> Path:
    """Write ``adapter`` with its LoRA config as diffusers' ``save_lora_weights`` does."""
    from diffusers import loaders

    writer: Any = getattr(loaders, LORA_WRITERS[config.family])
    writer.save_lora_weights(
        out,
        transformer_lora_layers={k: v.contiguous() for k, v in adapter.items()},
        transformer_lora_adapter_metadata={
            "r": config.lora_rank,
            "lora_alpha": config.lora_alpha,
            "target_modules": adapted_modules(adapter),
        },
    )
    return out


def _write_tiny(
    full: Mapping[str, torch.Tensor] | None,
    adapter: Mapping[str, torch.Tensor],
    config: ModelConfig,
    base: str | Path | None,
    out: Path,
) -> None:
    """A tiny-model directory: the base with the full weights, or with the adapter merged."""
    from engine.models.loading import load_model
    from engine.models.tiny.weights import save_tiny

    model: Any = load_model("tiny", base)
    state = model.transformer.state_dict()
    if full is not None:
        unknown = sorted(set(full) - set(state))
        if unknown:
            raise ValueError(f"checkpoint weights {unknown[:3]} are not in the tiny model")
        state.update(full)
    else:
        state = merge_lora(state, adapter, config.lora_alpha / config.lora_rank)
    model.transformer.load_state_dict(state)
    save_tiny(model, out)


def _folder_files(root: Path, prefix: str) -> list[ExportFile]:
    return [
        ExportFile(f"{prefix}/{path.relative_to(root).as_posix()}", path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def _readme(recipe: Recipe, step: int, kind: str, snippet: str, folder: str) -> str:
    what = {
        "lora": f"the LoRA adapter (rank {recipe.model.lora_rank}, alpha "
        f"{recipe.model.lora_alpha}, on {recipe.model.lora_target}) in diffusers' format",
        "full": "the fine-tuned transformer weights",
    }[kind]
    if recipe.model.family == "tiny":
        what += " and the whole tiny model with them (`model/`)"
    return (
        f"# {folder}\n\n"
        f"Groupwise export of {what}, from the checkpoint at optimizer step {step} of a "
        f"`{recipe.model.family}` run. `recipe.json` is the run's recipe.\n\n"
        f"Load it (unzip next to the script first):\n\n```python\n{snippet}```\n"
    )
