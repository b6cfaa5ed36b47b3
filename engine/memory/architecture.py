"""Exact sizes of a model's components, from its configs alone: what the memory plan counts.

A pipeline directory (``model_index.json`` naming each component's library and class, and a
``config.json`` per component, as ``save_pretrained`` writes them) is built component by
component on the ``meta`` device with the installed diffusers and transformers classes, the same
classes ``engine.models.loading`` builds, so the counts are exactly ``sum(p.numel())`` of the
loaded model and no weights are needed: a 20 B transformer builds in about 0.1 s once the
libraries are imported (docs/performance.md). The published configs of each real family ship in
``engine/memory/architectures`` (sources in its README.md) with their counts precomputed in
``counts.json``, so that validating a recipe never imports diffusers;
``python -m engine.memory.architecture`` rewrites that file and a test rebuilds every entry.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch

from engine.models.tiny.text import TEXT_ENCODER_ENTRY
from engine.parallel.fsdp import dit_blocks
from engine.policy import ATTENTION_MODULES, MLP_MODULES

#: The shipped configs, one pipeline directory per architecture.
SHIPPED_DIR = Path(__file__).parent / "architectures"
COUNTS_FILE = SHIPPED_DIR / "counts.json"
#: Each shipped architecture's directory and the repository its configs were published in. The
#: tiny model's own directory is the built-in weights' (``engine.models.tiny.weights.BUILTIN_DIR``,
#: named by path: importing that module loads diffusers, which validation must not need).
SHIPPED: dict[str, tuple[Path, str]] = {
    "tiny": (Path(__file__).parents[1] / "models" / "tiny" / "weights", "the built-in tiny model"),
    "qwen-image": (SHIPPED_DIR / "qwen-image", "Qwen/Qwen-Image"),
    "sd3.5-medium": (SHIPPED_DIR / "sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium"),
    "sd3.5-large": (SHIPPED_DIR / "sd3.5-large", "stabilityai/stable-diffusion-3.5-large"),
    "flux.1-dev": (SHIPPED_DIR / "flux.1-dev", "black-forest-labs/FLUX.1-dev"),
}
#: The architecture a family's plan assumes when ``model.path`` has no configs to read.
FAMILY_ARCHITECTURES = {
    "tiny": "tiny",
    "qwen-image": "qwen-image",
    "sd3": "sd3.5-medium",
    "flux": "flux.1-dev",
}
#: The ``lora_target`` values that add adapters, and the linear layers each adapts (as
#: ``engine.policy`` chooses them).
LORA_MODULES = {"attn": ATTENTION_MODULES, "attn+mlp": ATTENTION_MODULES + MLP_MODULES}
#: Components of a pipeline that are the text encoders.
TEXT_ENCODER_PREFIX = "text_encoder"
#: The built-in tiny model's text encoder is the project's own class, not a library's.
TINY_TEXT_ENCODER = TEXT_ENCODER_ENTRY


class ArchitectureError(ValueError):
    """A directory's configs cannot be read or built; the message names what to fix."""


@dataclass(frozen=True)
class Component:
    """One module of a pipeline, counted."""

    name: str
    class_name: str
    #: ``sum(p.numel() for p in module.parameters())``: tied weights once, as torch counts them.
    params: int
    #: Floating-point buffer elements (SD3's position table), stored in the model dtype too.
    buffers: int


@dataclass(frozen=True)
class DiTShape:
    """What the memory plan needs of the transformer beyond its size."""

    #: Width of the token stream inside the blocks (heads x head dim).
    hidden_size: int
    #: Width of the text encoder's output the transformer takes (``joint_attention_dim``).
    text_dim: int
    #: Channels of one latent pixel (the VAE's latent channels; the tiny model's image channels).
    latent_channels: int
    #: Channels of the VAE decoder at full resolution (0 without a VAE).
    vae_channels: int
    #: Repeated blocks by kind (class name, ``+dual`` for SD3.5's second attention).
    blocks: dict[str, int]
    #: The largest block's parameters: what an FSDP unit gathers at a time.
    largest_block_params: int
    #: Per ``lora_target``, the sum of in + out features of the linear layers it adapts: a rank
    #: r adapter adds r x (in + out) weights to each (peft's lora_A and lora_B, no bias).
    lora_fan: dict[str, int]


@dataclass(frozen=True)
class Architecture:
    """A pipeline's components and its transformer's shape."""

    name: str
    #: Where the configs came from: a repository name or a directory.
    source: str
    transformer: Component
    text_encoders: tuple[Component, ...]
    vae: Component | None
    dit: DiTShape

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(
            name=data["name"],
            source=data["source"],
            transformer=Component(**data["transformer"]),
            text_encoders=tuple(Component(**c) for c in data["text_encoders"]),
            vae=None if data["vae"] is None else Component(**data["vae"]),
            dit=DiTShape(**data["dit"]),
        )


def shipped(name: str) -> Architecture:
    """A shipped architecture's precomputed counts (``counts.json``), without building it."""
    counts = _counts_file()
    if name not in counts:
        raise KeyError(f"no shipped architecture '{name}': use one of {', '.join(SHIPPED)}")
    return Architecture.from_dict(counts[name])


def measure_directory(directory: str | Path, name: str | None = None) -> Architecture:
    """Build ``directory``'s components on the meta device and count them; cached per process
    until one of its config files changes. Raises ``ArchitectureError`` naming the file."""
    root = Path(directory).resolve()
    return _measure(root, _signature(root), name or root.name)


def measure_shipped(name: str) -> Architecture:
    """A shipped architecture built afresh (what ``counts.json`` must equal)."""
    directory, source = SHIPPED[name]
    found = measure_directory(directory, name)
    return Architecture(name, source, found.transformer, found.text_encoders, found.vae, found.dit)


@cache
def _counts_file() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
    return data


def _signature(root: Path) -> tuple[tuple[str, int], ...]:
    files = [root / "model_index.json", *sorted(root.glob("*/config.json"))]
    try:
        return tuple((str(f), f.stat().st_mtime_ns) for f in files)
    except OSError as error:
        raise ArchitectureError(f"{root} has no model_index.json to read ({error})") from None


@lru_cache(maxsize=16)
def _measure(root: Path, signature: tuple[tuple[str, int], ...], name: str) -> Architecture:
    index = _read_json(root / "model_index.json")
    modules: dict[str, tuple[Component, torch.nn.Module, dict[str, Any]]] = {}
    for component, entry in sorted(index.items()):
        if component.startswith("_") or not isinstance(entry, list) or None in entry:
            continue
        library, class_name = entry
        config = _read_json(root / component / "config.json") if _is_model(entry) else None
        if config is None:
            continue  # a scheduler or tokenizer: no weights
        module = _build(library, class_name, config, root / component)
        modules[component] = (_count(component, class_name, module), module, config)
    if "transformer" not in modules:
        raise ArchitectureError(f"{root}/model_index.json names no transformer: not a DiT pipeline")
    transformer, dit, dit_config = modules["transformer"]
    vae = modules.get("vae")
    encoders = tuple(c for key, (c, _, _) in modules.items() if key.startswith(TEXT_ENCODER_PREFIX))
    return Architecture(
        name=name,
        source=str(root),
        transformer=transformer,
        text_encoders=encoders,
        vae=None if vae is None else vae[0],
        dit=_shape(dit, dit_config, None if vae is None else vae[2]),
    )


def _is_model(entry: list[str]) -> bool:
    """Whether a model_index entry names a module with weights (a config.json beside it)."""
    library, class_name = entry
    return (library, class_name) == TINY_TEXT_ENCODER or (
        library in ("diffusers", "transformers")
        and not class_name.endswith(("Scheduler", "Tokenizer", "TokenizerFast", "Processor"))
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArchitectureError(f"{path} is missing or unreadable ({error})") from None
    if not isinstance(data, dict):
        raise ArchitectureError(f"{path} is not a JSON object")
    return data


def _build(library: str, class_name: str, config: dict[str, Any], where: Path) -> torch.nn.Module:
    """The component on the meta device: shapes without storage, built by the class the
    pipeline's ``from_pretrained`` uses."""
    try:
        with torch.device("meta"):
            if (library, class_name) == TINY_TEXT_ENCODER:
                from engine.models.tiny.text import TinyTextConfig, TinyTextEncoder

                return TinyTextEncoder(TinyTextConfig(**config))
            if library == "diffusers":
                import diffusers

                module: Any = getattr(diffusers, class_name).from_config(config)
            else:
                import transformers

                cls: Any = getattr(transformers, class_name)
                module = cls(cls.config_class.from_dict(config))
    except Exception as error:  # any library's refusal of a config is the same fix
        raise ArchitectureError(
            f"{where}/config.json does not build a {class_name} ({type(error).__name__}: "
            f"{error}): point model.path at an unmodified save_pretrained directory"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ArchitectureError(f"{where}: {library}.{class_name} is not a torch module")
    return module


def _count(name: str, class_name: str, module: torch.nn.Module) -> Component:
    return Component(
        name=name,
        class_name=class_name,
        params=sum(p.numel() for p in module.parameters()),
        buffers=sum(b.numel() for b in module.buffers() if b.is_floating_point()),
    )


def _shape(dit: torch.nn.Module, config: dict[str, Any], vae: dict[str, Any] | None) -> DiTShape:
    blocks: dict[str, int] = {}
    largest = 0
    for block in dit_blocks(dit):
        children = dict(block.named_children())
        dual = "+dual" if children.get("attn2") is not None else ""
        kind = type(block).__name__ + dual
        blocks[kind] = blocks.get(kind, 0) + 1
        largest = max(largest, sum(p.numel() for p in block.parameters()))
    linears = [(n, m) for n, m in dit.named_modules() if isinstance(m, torch.nn.Linear)]
    lora_fan = {
        target: sum(
            m.in_features + m.out_features
            for n, m in linears
            if any(n == s or n.endswith("." + s) for s in suffixes)
        )
        for target, suffixes in LORA_MODULES.items()
    }
    if vae is None:
        latent_channels, vae_channels = int(config["in_channels"]), 0
    elif "z_dim" in vae:  # Qwen-Image's video VAE
        latent_channels = int(vae["z_dim"])
        vae_channels = int(vae["base_dim"]) * int(vae["dim_mult"][0])
    else:
        latent_channels = int(vae["latent_channels"])
        vae_channels = int(vae["block_out_channels"][0])
    return DiTShape(
        hidden_size=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
        text_dim=int(config["joint_attention_dim"]),
        latent_channels=latent_channels,
        vae_channels=vae_channels,
        blocks=blocks,
        largest_block_params=largest,
        lora_fan=lora_fan,
    )


def main() -> int:
    """Rebuild every shipped architecture and rewrite ``counts.json``."""
    counts = {name: measure_shipped(name).to_dict() for name in SHIPPED}
    COUNTS_FILE.write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    for name, data in counts.items():
        print(
            f"{name:<14} transformer {data['transformer']['params'] / 1e9:6.2f} B", file=sys.stdout
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
