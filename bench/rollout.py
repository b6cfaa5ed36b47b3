"""Single-prompt multi-generation: images/s and DiT forwards/s per microgroup size M.

    python bench/rollout.py [--samples 16] [--repeats 3] [--threads 1] [--large]
        [--dtypes float32,bfloat16]

The same seeds are generated one by one (M=1 requests) and as microgroups of M = 1, 2, 4, 8, 16
(each M that divides --samples), with the shipped tiny model at 32 x 32, 8 steps, a window of
2 stochastic steps, once per model dtype of --dtypes (``model.dtype``: weights stored and the DiT
computing in it, as a run loads them), each row also compared with the first dtype's. With
--large (the default when CUDA is present) a random-weight pixel-space SD3 DiT at 512 px is
measured the same way (bfloat16 only on a GPU, --dtypes on a CPU). Each configuration runs
once to warm up and then --repeats times; the fastest repeat is reported, since a shared machine
only ever adds time. One torch thread by default: the tiny model's matmuls are too small to
split, and on a shared 2-core machine a second OpenMP thread waits on the other jobs
(docs/performance.md records both). The table is printed and appended to docs/performance.md
with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import SD3Transformer2DModel  # noqa: E402

from engine.models.base import FlowModel  # noqa: E402
from engine.models.tiny.model import TinyModel, tiny_scheduler  # noqa: E402
from engine.models.tiny.text import TinyTextConfig, TinyTextEncoder  # noqa: E402
from engine.models.tiny.weights import load_tiny  # noqa: E402
from engine.rollout import (  # noqa: E402
    InProcessBackend,
    RolloutRequest,
    RolloutResult,
    generate_one_by_one,
)

MICROGROUPS = (1, 2, 4, 8, 16)


def large_model(device: str, dtype: torch.dtype) -> FlowModel:
    """A random-weight SD3 DiT in pixel space at 512 px: 16 x 16 patches give 1024 tokens."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=512,
        patch_size=16,
        in_channels=3,
        out_channels=3,
        num_layers=12,
        attention_head_dim=64,
        num_attention_heads=12,
        joint_attention_dim=32,
        caption_projection_dim=768,
        pooled_projection_dim=32,
        pos_embed_max_size=32,
    )
    encoder = TinyTextEncoder(TinyTextConfig())
    return TinyModel(transformer.to(device, dtype), encoder.to(device, dtype), tiny_scheduler())


def measure(run: Callable[[], list[RolloutResult]], repeats: int) -> tuple[float, int, int]:
    """Fastest of ``repeats`` timed runs after a warm-up: (seconds, images, DiT forwards)."""
    results = run()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        results = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    images = sum(len(r.samples) for r in results)
    return best, images, sum(r.dit_forwards for r in results)


def rates(
    model: FlowModel, size: int, samples: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Per generation (one by one, then each M): (images/s, DiT forwards/s)."""
    backend = InProcessBackend(model)
    base = RolloutRequest(
        "a red image",
        seeds=tuple(range(1000, 1000 + samples)),
        height=size,
        width=size,
        num_inference_steps=8,
        sde_step_indices=(0, 1),
    )

    def microgroups(m: int) -> list[RolloutResult]:
        return [
            backend.generate(dataclasses.replace(base, seeds=base.seeds[i : i + m]))
            for i in range(0, samples, m)
        ]

    seconds, images, forwards = measure(lambda: [generate_one_by_one(backend, base)], repeats)
    found = {"one by one": (images / seconds, forwards / seconds)}
    for m in (m for m in MICROGROUPS if samples % m == 0):
        seconds, images, forwards = measure(lambda m=m: microgroups(m), repeats)
        found[f"M={m}"] = (images / seconds, forwards / seconds)
    return found


def table_rows(by_dtype: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """A row per generation and dtype: rates, against one by one and against the first dtype."""
    first = next(iter(by_dtype.values()))
    rows = []
    for name, found in by_dtype.items():
        baseline = found["one by one"][0]
        for label, (rate, forwards) in found.items():
            rows.append(
                f"| {label} | {name} | {rate:.1f} | {forwards:.1f} | {rate / baseline:.2f}x "
                f"| {rate / first[label][0]:.2f}x |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="samples of one prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="model dtypes to measure, comma-separated; the first is the comparison's base",
    )
    parser.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also a 512 px random DiT (default: when CUDA is present)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    large = torch.cuda.is_available() if args.large is None else args.large
    device = "cuda" if torch.cuda.is_available() else "cpu"

    dtypes = [name.strip() for name in args.dtypes.split(",") if name.strip()]
    tiny = {
        name: rates(load_tiny(dtype=getattr(torch, name)), 32, args.samples, args.repeats)
        for name in dtypes
    }
    sections = [("tiny model, 32x32, cpu", table_rows(tiny))]
    if large:
        large_dtypes = ["bfloat16"] if device == "cuda" else dtypes
        measured = {
            name: rates(large_model(device, getattr(torch, name)), 512, args.samples, args.repeats)
            for name in large_dtypes
        }
        sections.append(
            (f"random SD3 DiT (12 layers, 1024 tokens), 512x512, {device}", table_rows(measured))
        )

    details = [
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch threads",
        *([torch.cuda.get_device_name()] if torch.cuda.is_available() else []),
    ]
    lines = [
        heading("Rollout: single-prompt multi-generation", *details),
        "",
        f"`bench/rollout.py`: {args.samples} samples of one prompt, 8 steps (2 stochastic), "
        f"the same seeds for every row; fastest of {args.repeats} runs after a warm-up. "
        "DiT forwards/s counts batched calls; one by one makes one call per sample and step. "
        "The dtype is model.dtype (below float32 the DiT runs under autocast); the last column "
        "compares each row with the same row in the first dtype, measured in the same run.",
        "",
    ]
    for title, rows in sections:
        lines += [
            f"{title}:",
            "",
            "| generation | dtype | images/s | DiT forwards/s | vs one by one | vs first dtype |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    table = "\n".join(lines)
    publish(table)


if __name__ == "__main__":
    main()
