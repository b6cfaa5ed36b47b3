"""The memory plan: a recipe's estimated peak GPU memory per trainer rank, item by item.

Weights, gradients and optimizer state are counted exactly from the architecture
(``engine.memory.architecture``: parameter counts of the real classes built on the meta device) and
the precision rules of DESIGN.md (frozen weights in ``model.dtype``, trainable weights and
AdamW's two moments in float32). Activations are estimates: bytes per token per hidden unit per
DiT block, measured on the CPU with autograd's saved-tensor hooks on reduced-width builds of
each block class at 1 280-1 536 tokens (bf16 under autocast, as the trainer runs), times the
tile's rows, tokens, width and blocks. ``bench/gpu_scale.py`` compares the plan with the peak a
GPU reports.

A rank's memory holds what stays resident (weights, optimizer state, the rollout's stored
latents and conditioning) plus one phase's working memory at a time: the rollout's (the DiT
forwards and the VAE decode at M samples, and the text encoders, which offloading parks in host
memory only for the update: ``engine.run.loop`` moves them off after the rollout's prompts are
encoded) or the update's (one training tile's activations). The peak is the resident part plus
the larger phase, plus headroom. GB here is 10^9 bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engine.memory.architecture import (
    FAMILY_ARCHITECTURES,
    Architecture,
    measure_directory,
    shipped,
)
from engine.models.families import FAMILIES
from engine.models.precision import resolved_checkpointing, resolved_dtype, resolved_offload
from engine.recipe import Recipe

GB = 1e9
Phase = Literal["resident", "rollout", "train"]
PHASES: tuple[Phase, ...] = ("rollout", "train")
#: Each phase in words, for messages: "peak while training".
PHASE_WORDS: dict[Phase, str] = {
    "resident": "resident",
    "rollout": "generating",
    "train": "training",
}

#: Activation bytes autograd keeps per token, per hidden unit, per block in a training forward of
#: a 16-bit model under autocast: (LoRA on a frozen base, full fine-tune). Measured with
#: saved-tensor hooks on 1- and 2-block builds of width 256 at 1 280-1 536 tokens (the
#: difference is one block); a full fine-tune also keeps each linear layer's input for its
#: weight's gradient. tests/engine/memory/test_plan.py measures them again.
SAVED_PER_BLOCK: dict[str, tuple[float, float]] = {
    "QwenImageTransformerBlock": (51.0, 59.0),
    "JointTransformerBlock": (51.0, 59.0),
    "JointTransformerBlock+dual": (72.0, 80.0),
    "FluxTransformerBlock": (47.0, 59.0),
    "FluxSingleTransformerBlock": (33.0, 51.0),
}
#: A block class not measured counts as the most expensive one.
_WORST = max(SAVED_PER_BLOCK.values())
#: The same outside the blocks (patch embedding, final layer, the loss), and, with
#: checkpointing, per block: only each block's input (one 16-bit value per token and unit) is
#: kept, and one block is recomputed at a time in the backward.
SAVED_OUTSIDE_BLOCKS = 10.0
SAVED_PER_CHECKPOINTED_BLOCK = 2.0
#: Peak live bytes per token and hidden unit of a no-grad DiT forward (the rollout's), 16-bit:
#: the residual stream plus one block's intermediates; 40-54 measured on the CPU with an
#: allocation tracker at 1-3 blocks.
INFERENCE_PER_TOKEN = 48.0
#: Peak live bytes of a VAE decode per output pixel, in units of (its full-resolution channels x
#: the dtype's bytes): measured on the CPU at 128 and 256 px in bf16 (6.1-6.5 and 18.0-18.1).
VAE_DECODE: dict[str, float] = {"AutoencoderKL": 6.5, "AutoencoderKLQwenImage": 18.1}
#: Text tokens the plan assumes per prompt: SD3 pads CLIP to 77 and T5 to 256 and joins them,
#: FLUX pads T5 to 512, the tiny encoder to 12; Qwen-Image pads a batch to its longest prompt,
#: and 256 covers the prompts of the shipped datasets with its template's tail.
TEXT_TOKENS = {"tiny": 12, "sd3": 333, "flux": 512, "qwen-image": 256}
#: CUDA context, cuBLAS workspaces and NCCL buffers (outside torch's allocator), plus the
#: allocator's fragmentation as a share of what it holds.
HEADROOM_GB = 1.5
HEADROOM_SHARE = 0.10
FLOAT32 = 4


@dataclass(frozen=True)
class PlanItem:
    """One line of the plan."""

    name: str
    gb: float
    #: ``resident``, or the phase it belongs to (only the largest phase counts at the peak).
    phase: Phase
    #: What it is made of, in words.
    note: str


@dataclass(frozen=True)
class MemoryPlan:
    """The estimated peak memory of one trainer rank."""

    items: tuple[PlanItem, ...]
    gpu_memory_gb: float
    #: The phase whose working memory makes the peak.
    peak_phase: Phase
    #: The architecture counted and where its configs came from.
    architecture: str
    source: str

    @property
    def total_gb(self) -> float:
        """Resident items, the peak phase's items and the headroom."""
        return sum(item.gb for item in self.items if self.counted(item))

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.gpu_memory_gb

    def counted(self, item: PlanItem) -> bool:
        """Whether ``item`` is part of the peak."""
        return item.phase in ("resident", self.peak_phase)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the API and ``--json``: totals and every item with ``counted``."""
        return {
            "total_gb": round(self.total_gb, 2),
            "gpu_memory_gb": self.gpu_memory_gb,
            "fits": self.fits,
            "peak_phase": self.peak_phase,
            "peak_while": PHASE_WORDS[self.peak_phase],
            "architecture": self.architecture,
            "source": self.source,
            "items": [
                {**asdict(item), "gb": round(item.gb, 2), "counted": self.counted(item)}
                for item in self.items
            ],
        }

    def summary(self) -> str:
        """The counted items as one line: ``DiT weights 20.4, ..., headroom 5.2``."""
        return ", ".join(
            f"{item.name} {item.gb:.1f}"
            for item in self.items
            if self.counted(item) and item.gb >= 0.05
        )


def recipe_architecture(recipe: Recipe, root: str | Path | None = None) -> Architecture:
    """The architecture the plan counts: ``model.path``'s configs when that directory has a
    ``model_index.json`` here (relative to ``root``, default the working directory), else the
    family's shipped configs (the web server need not see the GPU host's disks).

    Raises ``ArchitectureError`` when the directory's configs cannot be built.
    """
    path = recipe.model.path
    if path:
        directory = Path(root or Path.cwd()) / path
        if (directory / "model_index.json").is_file():
            return measure_directory(directory)
    return shipped(FAMILY_ARCHITECTURES[recipe.model.family])


def memory_plan(recipe: Recipe, architecture: Architecture | None = None) -> MemoryPlan:
    """The plan of a recipe whose model, layout and sampler settings are valid."""
    arch = architecture or recipe_architecture(recipe)
    sizes = _Sizes.of(recipe, arch)
    items = [
        *_weights(recipe, arch, sizes),
        _rollout_store(recipe, arch, sizes),
        _rollout_activations(recipe, arch, sizes),
        _colocated_server(recipe, arch, sizes),
        _training_activations(recipe, arch, sizes),
    ]
    phase_gb = {p: sum(i.gb for i in items if i.phase == p) for p in PHASES}
    peak: Phase = max(PHASES, key=lambda p: phase_gb[p])
    held = sum(i.gb for i in items if i.phase in ("resident", peak))
    headroom = PlanItem(
        "headroom",
        HEADROOM_GB + HEADROOM_SHARE * held,
        "resident",
        f"{HEADROOM_GB} GB CUDA context and NCCL, {HEADROOM_SHARE:.0%} allocator fragmentation",
    )
    return MemoryPlan((*items, headroom), recipe.layout.gpu_memory_gb, peak, arch.name, arch.source)


@dataclass(frozen=True)
class _Sizes:
    """What every item needs: bytes per value, ranks sharing the DiT, rows and tokens."""

    size: int
    dtype_name: str
    #: Ranks the DiT and its training state are sharded over (1 without FSDP).
    ranks: int
    #: 2 when guidance runs the negative prompt as extra rows of the same DiT forward.
    guided: int
    text_tokens: int
    tokens: int
    #: Activation bytes per 16-bit value per row: tokens x width, scaled to the dtype.
    per_row: float

    @classmethod
    def of(cls, recipe: Recipe, arch: Architecture) -> _Sizes:
        family = FAMILIES[recipe.model.family]
        dtype = resolved_dtype(recipe, "cuda")
        lay, sampler = recipe.layout, recipe.sampler
        side = family.resolution_factor
        text = TEXT_TOKENS[recipe.model.family]
        tokens = (sampler.height // side) * (sampler.width // side) + text
        return cls(
            size=dtype.itemsize,
            dtype_name=str(dtype).removeprefix("torch."),
            ranks=lay.num_gpus if lay.fsdp and lay.num_gpus > 1 else 1,
            guided=_guided(recipe),
            text_tokens=text,
            tokens=tokens,
            # The measured constants are bytes of 16-bit values.
            per_row=tokens * arch.dit.hidden_size * dtype.itemsize / 2,
        )


def _weights(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> list[PlanItem]:
    """Weights and training state: DESIGN.md's precision rules applied to exact counts."""
    model = recipe.model
    dit, size, ranks, name = arch.transformer, sizes.size, sizes.ranks, sizes.dtype_name
    full = model.lora_target == "full"
    trainable = dit.params if full else model.lora_rank * arch.dit.lora_fan[model.lora_target]
    # A full fine-tune's weights are the float32 trainable ones (autocast computes in the
    # model dtype); LoRA's base stays in the model dtype.
    frozen = 0 if full else dit.params
    # FSDP holds a shard of each parameter, plus the unit in use and the prefetched next one.
    gathered = 2 * arch.dit.largest_block_params * size if ranks > 1 else 0
    sharded = f", sharded over {ranks} ranks" if ranks > 1 else ""
    encoders = sum(c.params + c.buffers for c in arch.text_encoders)
    offloaded = resolved_offload(recipe) == "cpu"
    vae = 0 if arch.vae is None else arch.vae.params + arch.vae.buffers
    # A full fine-tune's reference copy is in the model dtype and sharded like the policy.
    reference = dit.params * size / ranks if full and recipe.optimiser.kl_beta > 0 else 0
    master = "master weights" if full else f"LoRA weights (r={model.lora_rank})"
    if reference:
        reference_note = f"a frozen {name} copy for the KL term{sharded}"
    elif full:
        reference_note = "none: kl_beta = 0"
    else:
        reference_note = "none: LoRA's reference is the base with adapters disabled"
    gb: list[tuple[str, float, Phase, str]] = [
        ("DiT weights", frozen * size / ranks + dit.buffers * size + gathered, "resident",
         (f"buffers in {name}; the weights are the float32 trainable weights" if full
          else f"{_amount(dit.params)} parameters in {name}")
         + (f"{sharded}, plus 2 gathered blocks" if ranks > 1 else "")),
        ("text encoders", encoders * size, "rollout" if offloaded else "resident",
         f"{_amount(encoders)} parameters in {name}"
         + ("; in host memory during the update" if offloaded else "")),
        ("VAE", vae * size, "resident",
         "none: the tiny model works in pixels" if arch.vae is None
         else f"{_amount(vae)} parameters in {name}"),
        ("trainable weights", trainable * FLOAT32 / ranks, "resident",
         f"{_amount(trainable)} float32 {master}{sharded}"),
        ("gradients", trainable * FLOAT32 / ranks, "resident",
         f"float32{sharded}, kept from a step's backward to the next step's zero_grad"),
        ("optimizer state", 2 * trainable * FLOAT32 / ranks, "resident",
         f"AdamW's two float32 moments{sharded}"),
        ("reference model", reference, "resident", reference_note),
    ]  # fmt: skip
    return [PlanItem(item, value / GB, phase, note) for item, value, phase, note in gb]


def _rollout_store(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> PlanItem:
    """Every sample's stored trajectory and conditioning, which the trainer replays."""
    lay, sampler = recipe.layout, recipe.sampler
    scale = FAMILIES[recipe.model.family].vae_scale
    samples = lay.rollout_batch_size * lay.n_samples_per_prompt
    latent = arch.dit.latent_channels * (sampler.height // scale) * (sampler.width // scale)
    conditioning = sizes.guided * sizes.text_tokens * arch.dit.text_dim
    stored = samples * ((sampler.sde_window_size + 1) * latent + conditioning) * sizes.size
    return PlanItem(
        "rollout store",
        stored / GB,
        "resident",
        f"{samples} samples' {sampler.sde_window_size + 1} trajectory latents and conditioning, "
        "on every rank",
    )


def _rollout_activations(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> PlanItem:
    """The larger of a no-grad DiT forward at M samples and the VAE decoding them; nothing when
    SGLang-D servers generate (a colocated one is its own item)."""
    if recipe.rollout.backend == "sglang":
        return PlanItem("rollout activations", 0.0, "rollout", "none: SGLang-D servers generate")
    working, words = _generation(recipe, arch, sizes)
    return PlanItem("rollout activations", working / GB, "rollout", words)


def _colocated_server(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> PlanItem:
    """A colocated SGLang-D server on this GPU: its own copy of the whole pipeline in the model
    dtype and its working memory at M. It counts while the rollout runs; during each update it
    has released its memory (``/release_memory_occupation``, docs/sglang.md). External servers
    hold theirs elsewhere."""
    rollout = recipe.rollout
    if rollout.backend != "sglang" or rollout.launch != "colocated":
        return PlanItem("colocated server", 0.0, "rollout", "none: no server on this GPU")
    parts = [arch.transformer, *arch.text_encoders, *([arch.vae] if arch.vae else [])]
    params = sum(part.params + part.buffers for part in parts)
    working, words = _generation(recipe, arch, sizes)
    return PlanItem(
        "colocated server",
        (params * sizes.size + working) / GB,
        "rollout",
        f"its own {sizes.dtype_name} pipeline ({_amount(params)} parameters) and {words}; "
        "released during each update",
    )


def _generation(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> tuple[float, str]:
    """Bytes of generating one microgroup, the larger of a no-grad DiT forward at M samples and
    the VAE decoding them, with what they are in words."""
    micro, sampler = recipe.layout.diffusion_microgroup_size, recipe.sampler
    rows = micro * sizes.guided
    denoise = rows * sizes.per_row * INFERENCE_PER_TOKEN
    decode = 0.0
    if arch.vae is not None:
        factor = VAE_DECODE.get(arch.vae.class_name, max(VAE_DECODE.values()))
        pixels = sampler.height * sampler.width
        decode = micro * pixels * arch.dit.vae_channels * sizes.size * factor
    words = (
        f"M={micro}: DiT forward {denoise / GB:.1f} GB ({rows} rows), "
        f"VAE decode {decode / GB:.1f} GB"
    )
    return max(denoise, decode), words


def _training_activations(recipe: Recipe, arch: Architecture, sizes: _Sizes) -> PlanItem:
    """What one training tile keeps for its backward."""
    lay = recipe.layout
    full = recipe.model.lora_target == "full"
    checkpointing = resolved_checkpointing(recipe)
    rows = lay.micro_batch_size_sample * lay.micro_batch_size_tstep * sizes.guided
    kinds = arch.dit.blocks
    saved = {kind: SAVED_PER_BLOCK.get(kind, _WORST)[1 if full else 0] for kind in kinds}
    blocks = sum(kinds.values())
    if checkpointing:
        per_value = blocks * SAVED_PER_CHECKPOINTED_BLOCK + max(saved.values())
    else:
        per_value = sum(count * saved[kind] for kind, count in kinds.items())
    kept = rows * sizes.per_row * (per_value + SAVED_OUTSIDE_BLOCKS)
    if full and sizes.size < FLOAT32 and sizes.ranks == 1:
        # Autocast's model-dtype copies of the float32 weights, kept for the backward (under
        # FSDP the units are gathered in the model dtype instead, counted with the weights).
        copies = arch.dit.largest_block_params if checkpointing else arch.transformer.params
        kept += copies * sizes.size
    return PlanItem(
        "training activations",
        kept / GB,
        "train",
        f"tile of {rows} rows x {sizes.tokens} tokens x {arch.dit.hidden_size} wide x {blocks} "
        f"blocks, checkpointing {'on' if checkpointing else 'off'}",
    )


def _guided(recipe: Recipe) -> int:
    """Rows per sample in a DiT forward: 2 when guidance runs the negative prompt as extra rows
    of the same forward (SD3's CFG, Qwen-Image's true CFG), else 1."""
    sampler = recipe.sampler
    kind = FAMILIES[recipe.model.family].guidance
    cfg = kind == "cfg" and sampler.guidance_scale > 1.0
    true_cfg = kind == "true-cfg" and sampler.true_cfg_scale > 1.0
    return 2 if cfg or true_cfg else 1


def _amount(count: int) -> str:
    """A parameter count in words: ``20.43 B``, ``424.7 M``, ``3.9 k``."""
    for scale, unit, digits in ((1e9, "B", 2), (1e6, "M", 1), (1e3, "k", 1)):
        if count >= scale:
            return f"{count / scale:.{digits}f} {unit}"
    return str(count)
