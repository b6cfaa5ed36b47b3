"""Real scale on one GPU: the Qwen-Image and SD3.5 Medium transformers at full size, random bf16.

    python bench/gpu_scale.py [--families qwen-image,sd3] [--sizes 1,2,4,8,16] [--tiny]
    bench/gpu_scale.sh                                  # on the lent GPU machine (see there)

Nothing is downloaded: each transformer and VAE is built from the published configs shipped in
engine/memory/architectures, with random weights, in bfloat16 on the device. The text encoder is
left out and its output drawn at random in its real shape (TEXT_TOKENS x joint_attention_dim): a
prompt is encoded once per request, and the DiT is what scales with M. Per family:

1. Rollout: one request of M samples at 512 px, 10 steps, the presets' guidance (Qwen-Image's
   true CFG 4 and SD3's CFG 4.5 both run 2M rows per forward) and SDE window, through the
   project's ``InProcessBackend`` (its denoising loop and VAE decode), for M = 1, 2, 4, 8, 16:
   images/s, the DiT's achieved TFLOP/s (torch's FlopCounterMode on one forward, which is
   linear in the rows) against the GPU's bf16 dense peak, and the peak memory against the
   memory plan's (weights + VAE + rollout store + rollout activations).
2. Training: the presets' tile (4 samples x 1 step, doubled rows for guidance) with their LoRA
   adapters and gradient checkpointing, through ``Trainer.train_rollout`` (replay, forward,
   backward, AdamW): time, TFLOP/s, and peak memory against the plan's resident items plus its
   training activations. The plan reads the same config directory the bench builds from.

``--tiny`` shrinks every config (2 blocks, 1-2 heads, 64 px, M up to 4, 2 steps) and runs on the
CPU: the same code path end to end, for a dry run where there is no GPU; its numbers mean
nothing and are printed, not published. Each timing is one run after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import (  # noqa: E402
    AutoencoderKL,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from engine.memory.architecture import SHIPPED, measure_directory  # noqa: E402
from engine.memory.plan import TEXT_TOKENS, MemoryPlan, memory_plan  # noqa: E402
from engine.memory.probe import MemoryProbe  # noqa: E402
from engine.models.base import FlowModel  # noqa: E402
from engine.models.precision import resolved_checkpointing  # noqa: E402
from engine.models.qwen_image import QwenImageModel  # noqa: E402
from engine.models.sd3 import SD3Model  # noqa: E402
from engine.overrides import apply_overrides  # noqa: E402
from engine.policy import Policy  # noqa: E402
from engine.presets import preset  # noqa: E402
from engine.recipe import Recipe  # noqa: E402
from engine.rollout import InProcessBackend, RolloutRequest  # noqa: E402
from engine.trainer import Trainer, rollout_conditionings  # noqa: E402

#: bf16 dense tensor-core peaks (TFLOP/s) by device name, from NVIDIA's data sheets (SXM parts).
BF16_PEAK = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
TILE = 4


@dataclass(frozen=True)
class Family:
    """What the bench builds for one family."""

    name: str
    architecture: str
    preset: str
    transformer: Any
    vae: Any
    model: type[RandomTextQwenImage] | type[RandomTextSD3]
    #: Config changes for --tiny.
    tiny_transformer: dict[str, Any]
    tiny_vae: dict[str, Any]


def _random(shape: tuple[int, ...], model: FlowModel) -> torch.Tensor:
    """Text-encoder outputs of a fixed seed, in the model's dtype on its device."""
    generator = torch.Generator().manual_seed(shape[0])
    return torch.randn(shape, generator=generator).to(model.device, model.dtype)


class RandomTextQwenImage(QwenImageModel):
    """Qwen-Image whose text encoder is random conditioning of Qwen2.5-VL's output shape."""

    def text_encoders(self) -> list[torch.nn.Module]:
        return []

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        shape = (len(texts), TEXT_TOKENS["qwen-image"], int(self.config.joint_attention_dim))
        mask = torch.ones(shape[:2], dtype=torch.long, device=self.device)
        return {"prompt_embeds": _random(shape, self), "mask": mask}


class RandomTextSD3(SD3Model):
    """SD3.5 whose three text encoders are random conditioning of their joined output shape."""

    def text_encoders(self) -> list[torch.nn.Module]:
        return []

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        shape = (len(texts), TEXT_TOKENS["sd3"], int(self.config.joint_attention_dim))
        pooled = (len(texts), int(self.config.pooled_projection_dim))
        return {"prompt_embeds": _random(shape, self), "pooled": _random(pooled, self)}


FAMILIES = {
    "qwen-image": Family(
        "qwen-image",
        "qwen-image",
        "ocr-qwen-image-2gpu",
        QwenImageTransformer2DModel,
        AutoencoderKLQwenImage,
        RandomTextQwenImage,
        {"num_layers": 2, "num_attention_heads": 1},
        {"base_dim": 16, "num_res_blocks": 1},
    ),
    "sd3": Family(
        "sd3",
        "sd3.5-medium",
        "ocr-sd35",
        SD3Transformer2DModel,
        AutoencoderKL,
        RandomTextSD3,
        {
            "num_layers": 2,
            "num_attention_heads": 2,
            "caption_projection_dim": 128,
            "dual_attention_layers": [0],
        },
        {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
    ),
}


def write_configs(family: Family, tiny: bool, directory: Path) -> Path:
    """The transformer's and VAE's published configs (shrunk with --tiny) as a pipeline
    directory, which both the bench and the memory plan read."""
    source = SHIPPED[family.architecture][0]
    index = json.loads((source / "model_index.json").read_text())
    (directory / "model_index.json").write_text(
        json.dumps({key: index[key] for key in ("_class_name", "transformer", "vae")})
    )
    for component, changes in (
        ("transformer", family.tiny_transformer),
        ("vae", family.tiny_vae),
    ):
        config = json.loads((source / component / "config.json").read_text())
        (directory / component).mkdir(parents=True, exist_ok=True)
        (directory / component / "config.json").write_text(
            json.dumps({**config, **(changes if tiny else {})})
        )
    return directory


def build(family: Family, directory: Path, device: torch.device) -> FlowModel:
    """Random weights made on the device in bfloat16 (no float32 copy of 20 B weights)."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            dit = family.transformer.from_config(_config(directory / "transformer"))
            vae = family.vae.from_config(_config(directory / "vae"))
    finally:
        torch.set_default_dtype(previous)
    pipeline = SimpleNamespace(
        transformer=dit.eval(),
        vae=vae.eval(),
        vae_scale_factor=8,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    return family.model(pipeline)


def _config(directory: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return config


def bench_recipe(family: Family, directory: Path, micro: int, args: argparse.Namespace) -> Recipe:
    """The family's preset on one GPU, one prompt of G = max size, at the bench's size."""
    group = max(args.sizes)
    return apply_overrides(
        preset(family.preset),
        {
            "model.path": str(directory),
            "model.dtype": "bfloat16",
            "num_gpus": 1,
            "rollout_batch_size": 1,
            "n_samples_per_prompt": group,
            "diffusion_microgroup_size": micro,
            "num_steps_per_rollout": 1,
            "micro_batch_size_sample": min(TILE, group),
            "micro_batch_size_tstep": 1,
            "height": args.size,
            "width": args.size,
            "num_inference_steps": args.steps,
            "sde_window_size": 1,
            "sde_window_range": [0, 0],
        },
    )


def request(recipe: Recipe, micro: int) -> RolloutRequest:
    sampler = recipe.sampler
    return RolloutRequest(
        'a sign that says "scale"',
        seeds=tuple(range(micro)),
        height=sampler.height,
        width=sampler.width,
        num_inference_steps=sampler.num_inference_steps,
        sde_step_indices=(0,),
        noise_level=sampler.noise_level,
        guidance_scale=sampler.guidance_scale,
        true_cfg_scale=sampler.true_cfg_scale,
        group_index=0,
    )


def planned(plan: MemoryPlan, names: tuple[str, ...]) -> float:
    return sum(item.gb for item in plan.items if item.name in names)


WEIGHTS = ("DiT weights", "VAE", "rollout store")
TRAINING = ("trainable weights", "gradients", "optimizer state", "training activations")


def forward_flops(model: FlowModel, req: RolloutRequest) -> int:
    """FLOPs of one DiT forward of a request of one sample (guidance rows included)."""
    conditioning = model.encode_prompts(
        [req.prompt], [req.negative_prompt] if _guided(model, req) else None
    )
    shape = (1, *model.latent_shape(req.height, req.width))
    latents = torch.zeros(shape, device=model.device, dtype=model.dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.velocity(
            latents,
            torch.full((1,), 0.5, device=model.device),
            conditioning,
            guidance_scale=req.guidance_scale,
            true_cfg_scale=req.true_cfg_scale,
        )
    return int(counter.get_total_flops())


def _guided(model: FlowModel, req: RolloutRequest) -> bool:
    return model.needs_negative(req.guidance_scale, req.true_cfg_scale)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rollout_rows(
    family: Family, model: FlowModel, directory: Path, args: argparse.Namespace
) -> list[str]:
    device, arch = model.device, measure_directory(directory)
    backend = InProcessBackend(model)
    per_forward = forward_flops(model, request(bench_recipe(family, directory, 1, args), 1))
    rows = []
    backend.generate(request(bench_recipe(family, directory, 1, args), 1))  # warm-up
    for micro in args.sizes:
        recipe = bench_recipe(family, directory, micro, args)
        req = request(recipe, micro)
        probe = MemoryProbe(device)
        probe.start()
        started = time.perf_counter()
        backend.generate(req)
        synchronize(device)
        seconds = time.perf_counter() - started
        peak, _ = probe.stop()
        flops = per_forward * micro * req.num_inference_steps
        plan = memory_plan(recipe, arch)
        expected = planned(plan, (*WEIGHTS, "rollout activations"))
        rows.append(
            f"| {family.name} | {micro} | {micro * (2 if _guided(model, req) else 1)} | "
            f"{seconds:.2f} | {micro / seconds:.2f} | {_tflops(flops, seconds, args)} | "
            f"{peak / 1e9:.1f} | {expected:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def training_row(
    family: Family, model: FlowModel, directory: Path, args: argparse.Namespace
) -> str:
    device, arch = model.device, measure_directory(directory)
    tile = min(TILE, max(args.sizes))
    recipe = bench_recipe(family, directory, tile, args)
    recipe = apply_overrides(recipe, {"n_samples_per_prompt": tile})
    checkpointing = resolved_checkpointing(recipe)
    policy = Policy(
        model,
        recipe.model,
        keep_reference=False,
        seed=0,
        gradient_checkpointing=checkpointing,
    )
    trainer = Trainer(policy, recipe)
    results = [InProcessBackend(model).generate(request(recipe, tile))]
    conditionings = rollout_conditionings(model, results)
    advantages = [torch.linspace(-1.0, 1.0, tile, device=device)]
    counter = FlopCounterMode(display=False)
    with counter:  # the warm-up, counted: replay, forward, backward
        trainer.train_rollout(results, conditionings, advantages)
    probe = MemoryProbe(device)
    probe.start()
    started = time.perf_counter()
    trainer.train_rollout(results, conditionings, advantages)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak, _ = probe.stop()
    plan = memory_plan(recipe, arch)
    expected = planned(plan, (*WEIGHTS, *TRAINING))
    rows = tile * (2 if _guided(model, request(recipe, tile)) else 1)
    row = (
        f"| {family.name} | {tile} x 1 ({rows} rows), LoRA r={recipe.model.lora_rank} "
        f"{recipe.model.lora_target}, checkpointing {'on' if checkpointing else 'off'} | "
        f"{seconds:.2f} | {_tflops(counter.get_total_flops(), seconds, args)} | "
        f"{peak / 1e9:.1f} | {expected:.1f} |"
    )
    print(row, flush=True)
    return row


def _tflops(flops: float, seconds: float, args: argparse.Namespace) -> str:
    achieved = flops / seconds / 1e12
    if args.peak_tflops is None:
        return f"{achieved:.3g}"
    return f"{achieved:.3g} ({100 * achieved / args.peak_tflops:.0f}%)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="qwen-image,sd3", help="comma-separated families")
    parser.add_argument("--sizes", default=None, help="microgroup sizes M, e.g. 1,2,4,8,16")
    parser.add_argument("--size", type=int, default=None, help="image side in px (512)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (10)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--tiny", action="store_true", help="shrunk configs on the CPU")
    args = parser.parse_args()
    tiny = args.tiny
    args.sizes = [int(s) for s in (args.sizes or ("1,2,4" if tiny else "1,2,4,8,16")).split(",")]
    args.size = args.size or (64 if tiny else 512)
    args.steps = args.steps or (2 if tiny else 10)
    if tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device: run with --tiny for a dry run on the CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = next((v for k, v in BF16_PEAK.items() if k in name), None)
    rollout, training = [], []
    for family_name in args.families.split(","):
        family = FAMILIES[family_name]
        with tempfile.TemporaryDirectory() as scratch:
            directory = write_configs(family, tiny, Path(scratch))
            started = time.perf_counter()
            model = build(family, directory, device)
            print(f"{family.name}: built in {time.perf_counter() - started:.1f} s", flush=True)
            rollout += rollout_rows(family, model, directory, args)
            training.append(training_row(family, model, directory, args))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    peak = (
        "no peak known for this device"
        if args.peak_tflops is None
        else f"in brackets the share of its bf16 dense peak, {args.peak_tflops:g} TFLOP/s"
    )
    table = "\n".join(
        [
            heading("Real scale on one GPU" + (" (dry run, shrunk configs)" if tiny else ""), name),
            "",
            f"`bench/gpu_scale.py`: random bf16 weights from the shipped configs, {args.size} px, "
            f"{args.steps} steps, random text conditioning; TFLOP/s counted by FlopCounterMode "
            f"({peak}); peak memory is torch's allocator peak (CUDA) or the RSS peak (CPU), "
            "against the memory plan's matching items (weights, VAE, rollout store, and the "
            "rollout's or the tile's working memory; no text encoder, no headroom).",
            "",
            "| family | M | rows per forward | s per request | images/s | DiT TFLOP/s | peak GB | "
            "plan GB |",
            "|---|---|---|---|---|---|---|---|",
            *rollout,
            "",
            "| family | training tile | s per step | TFLOP/s | peak GB | plan GB |",
            "|---|---|---|---|---|---|",
            *training,
        ]
    )
    if tiny:
        print(table)
    else:
        publish(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
