"""Make the built-in tiny model's weights: ``python -m engine.models.tiny.make_weights``.

``--out DIR`` writes them elsewhere. Plain flow matching on ``engine.models.tiny.data``'s synthetic
images, whose colour and shape ignore the prompt: the result paints diverse images for any prompt
and follows none, which is where GRPO starts (issue 4's calibration: ~0.3 M parameters, 500 steps,
about a minute on 2 cores). Seeded throughout, so the same torch build remakes the same weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from engine.models.tiny.data import synthetic_batch
from engine.models.tiny.model import TinyModel
from engine.models.tiny.weights import BUILTIN_DIR, save_tiny

SEED = 20260401
STEPS = 500
BATCH = 64
SIZE = 32
LR = 2e-3


def pretrain(steps: int = STEPS, batch: int = BATCH, seed: int = SEED) -> TinyModel:
    """A tiny model taught ``steps`` flow-matching steps of ``batch`` synthetic images."""
    model = TinyModel.random(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.transformer.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=LR, total_steps=steps, pct_start=0.1
    )
    model.transformer.train()
    for step in range(steps):
        images, prompts = synthetic_batch(batch, SIZE, generator)
        noise = torch.randn(images.shape, generator=generator)
        t = torch.rand(batch, generator=generator)
        noisy = (1 - t[:, None, None, None]) * images + t[:, None, None, None] * noise
        conditioning = model.encode_prompts(prompts)
        velocity = model.velocity(noisy, t, conditioning)
        loss = torch.nn.functional.mse_loss(velocity, noise - images)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.transformer.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    model.transformer.eval()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN_DIR, help="directory to write")
    parser.add_argument("--steps", type=int, default=STEPS, help="flow-matching steps")
    args = parser.parse_args()
    started = time.perf_counter()
    model = pretrain(args.steps)
    save_tiny(model, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
