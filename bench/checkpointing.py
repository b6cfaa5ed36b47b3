"""Gradient checkpointing: one training tile's time and memory with and without it.

    python bench/checkpointing.py [--layers 8] [--size 64] [--samples 8] [--repeats 5]
        [--threads 1] [--dtype float32] [--target full]

A training tile is what the trainer runs per tile (``engine.trainer``): the stochastic step's
log-prob of ``--samples`` stored samples at one SDE step, through the DiT, and its backward. The
DiT is a random-weight pixel-space SD3 transformer of ``--layers`` blocks (6 heads x 64 = 384
wide, 4 x 4 patches: a 64 px image is 256 tokens), made trainable by ``engine.policy.Policy``
as a run does (``--target``: full or attn), in ``--dtype``. Each setting runs in a fresh
process, so neither inherits the other's freed heap. Of the first tile it reports the peak
memory above what was in use before it (``engine.memory.probe.MemoryProbe``: the CUDA allocator on a
GPU, the process's peak RSS on a CPU) and the activation bytes autograd saves for the backward
outside checkpointed blocks (a saved-tensors hook counts each buffer once, weights, saved by
reference, left out: exact and independent of the allocator, but blind to the block inputs that
checkpointing holds to recompute from, which the peak includes); then ``--repeats`` more tiles
are timed and the fastest reported. The table is printed and appended to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import SD3Transformer2DModel  # noqa: E402

from engine.memory.probe import MemoryProbe  # noqa: E402
from engine.models.tiny.model import TinyModel, tiny_scheduler  # noqa: E402
from engine.models.tiny.text import TinyTextConfig, TinyTextEncoder  # noqa: E402
from engine.policy import Policy  # noqa: E402
from engine.recipe import ModelConfig  # noqa: E402
from engine.rollout import RolloutRequest  # noqa: E402
from engine.rollout.steps import stochastic_step  # noqa: E402

MB = 1e6


def model(layers: int, size: int, device: torch.device, dtype: torch.dtype) -> TinyModel:
    """A random SD3 DiT in pixel space, wrapped as the tiny model is."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=size,
        patch_size=4,
        in_channels=3,
        out_channels=3,
        num_layers=layers,
        attention_head_dim=64,
        num_attention_heads=6,
        joint_attention_dim=32,
        caption_projection_dim=384,
        pooled_projection_dim=32,
        pos_embed_max_size=max(16, size // 4),
    )
    encoder = TinyTextEncoder(TinyTextConfig())
    return TinyModel(transformer.to(device, dtype), encoder.to(device, dtype), tiny_scheduler())


def measure(args: argparse.Namespace, checkpointing: bool) -> dict[str, float]:
    """One setting, in this process: fastest tile seconds, peak and kept bytes."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flow = model(args.layers, args.size, device, getattr(torch, args.dtype))
    Policy(
        flow,
        ModelConfig(lora_target=args.target),
        keep_reference=False,
        seed=0,
        gradient_checkpointing=checkpointing,
    )
    request = RolloutRequest(
        "a red image",
        seeds=tuple(range(args.samples)),
        height=args.size,
        width=args.size,
        num_inference_steps=8,
        sde_step_indices=(0, 1),
        noise_level=1.0,
    )
    generator = torch.Generator().manual_seed(0)
    shape = (args.samples, 3, args.size, args.size)
    latents = torch.randn(shape, generator=generator).to(device, flow.dtype)
    following = torch.randn(shape, generator=generator).to(device, flow.dtype)
    conditioning = flow.encode_prompts([request.prompt]).repeat(args.samples)
    schedule = flow.sigmas(8, args.size, args.size)
    kept = 0
    # Weights are saved by reference (a linear saves its weight), costing nothing extra:
    # they count as seen.
    seen = {p.untyped_storage().data_ptr() for p in flow.transformer.parameters()}

    def tile() -> None:
        step = stochastic_step(
            flow, latents, schedule, 0, conditioning, request, prev_sample=following
        )
        step.log_prob.mean().neg().backward()

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        storage = tensor.untyped_storage()
        # Each buffer once: several ops save the same activation, or views of it.
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            kept += storage.nbytes()
        return tensor

    # The first tile is measured: once a tile has run, the C heap keeps its freed pages
    # resident and the next one reuses them without raising the peak RSS. Checkpointing stores
    # placeholders of its own for what a block saves: this outer hook counts what stays until
    # the backward.
    probe = MemoryProbe(device)
    probe.start()
    with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        tile()
    _peak, growth = probe.stop()
    best = float("inf")
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        tile()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return {"seconds": best, "peak": growth, "kept": kept, "source": probe.source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="DiT blocks")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--samples", type=int, default=8, help="samples in the tile")
    parser.add_argument("--repeats", type=int, default=5, help="timed tiles per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--dtype", default="float32", help="model.dtype")
    parser.add_argument("--target", default="full", help="lora_target: full or attn")
    parser.add_argument("--measure", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    # One thread by default: on a shared machine a second one mostly waits on other jobs.
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args, args.measure == "on")))
        return
    found = {}
    for setting in ("off", "on"):
        answer = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--measure", setting],
            check=True,
            capture_output=True,
            text=True,
        )
        found[setting] = json.loads(answer.stdout.strip().splitlines()[-1])
    off, on = found["off"], found["on"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens = (args.size // 4) ** 2
    command = " ".join(["bench/checkpointing.py", *sys.argv[1:]])
    rows = [
        f"| {setting} | {m['seconds']:.3f} | {m['peak'] / MB:.0f} | {m['kept'] / MB:.0f} |"
        for setting, m in found.items()
    ]
    table = "\n".join(
        [
            heading(
                "Gradient checkpointing",
                f"torch {torch.__version__}",
                f"{torch.get_num_threads()} torch threads",
                *([torch.cuda.get_device_name()] if device == "cuda" else []),
            ),
            "",
            f"`{command}`: one training tile (log-prob of "
            f"{args.samples} samples at one SDE step and its backward) through a random SD3 DiT "
            f"of {args.layers} blocks, 384 wide, {tokens} image tokens, {args.target} fine-tune "
            f"in {args.dtype} on {device}; fastest of {args.repeats} tiles after the first; each "
            f"setting in a fresh process. Peak: {off['source']}, the first tile, above the memory "
            "in use before it. Kept: "
            "activation bytes autograd saves for the backward outside checkpointed blocks, each "
            "buffer once.",
            "",
            "| checkpointing | tile seconds | peak MB | kept for backward MB |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Checkpointing: {on['seconds'] / off['seconds']:.2f}x the tile time, "
            f"{on['peak'] / max(off['peak'], 1):.2f}x the peak, "
            f"{on['kept'] / max(off['kept'], 1):.2f}x the bytes kept (same run).",
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
