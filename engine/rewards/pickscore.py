"""The PickScore reward: a CLIP model fine-tuned on human preferences between images.

Score = ``logit_scale.exp() * cosine(image embedding, prompt embedding) / 26``. PickScore_v1's
learnt scale is about 100, so dividing by 26 (as Flow-GRPO does) puts typical scores near [0, 1]
and keeps published reward curves comparable.

The model (PickScore_v1) and the processor (CLIP-ViT-H-14's: PickScore ships none) load in
transformers format from local directories; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.rewards.base import Images, RewardOutput, check_batch

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

#: Environment variable naming the PickScore_v1 model directory (transformers format).
MODEL_SETTING = "GROUPWISE_PICKSCORE_DIR"
#: Environment variable naming the CLIP processor directory (CLIP-ViT-H-14's).
PROCESSOR_SETTING = "GROUPWISE_CLIP_PROCESSOR_DIR"
#: A processor directory holds one of these (transformers 4 writes the first, 5 the second).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: The divisor of the scaled cosine similarity.
SCALE_DIVISOR = 26.0
#: The dtypes the model may run in.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def model_directory(path: str | os.PathLike[str] | None = None) -> Path:
    """The model directory: ``path``, else ``GROUPWISE_PICKSCORE_DIR``; it must hold
    ``config.json``. Raises ``FileNotFoundError`` naming the setting otherwise."""
    chosen = path or os.environ.get(MODEL_SETTING)
    if not chosen:
        raise FileNotFoundError(
            f"the pickscore reward needs its model: set {MODEL_SETTING} (or the reward's path) "
            "to the PickScore_v1 directory in transformers format (config.json and weights)"
        )
    directory = Path(chosen)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{MODEL_SETTING} (or the reward's path) is '{directory}', which has no "
            "config.json: point it at the PickScore_v1 directory in transformers format"
        )
    return directory


def processor_directory(path: str | os.PathLike[str] | None, model_dir: Path) -> Path:
    """The processor directory: ``path``, else ``GROUPWISE_CLIP_PROCESSOR_DIR``, else the model
    directory if it holds a processor. Raises ``FileNotFoundError`` naming the setting."""
    chosen = path or os.environ.get(PROCESSOR_SETTING)
    directory = Path(chosen) if chosen else model_dir
    if not any((directory / name).is_file() for name in PROCESSOR_FILES):
        where = (
            f"{PROCESSOR_SETTING} is '{directory}', which"
            if chosen
            else f"{PROCESSOR_SETTING} is unset and the model directory '{directory}'"
        )
        raise FileNotFoundError(
            f"{where} has no {' or '.join(PROCESSOR_FILES)}: set {PROCESSOR_SETTING} to the "
            "CLIP-ViT-H-14 processor directory in transformers format (its image processor "
            "and tokenizer files)"
        )
    return directory


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class PickScoreReward:
    """Score = ``logit_scale.exp() * cosine(image, prompt) / 26`` per image, batched.

    ``dtype`` is ``float32`` or ``bfloat16`` (the model's weights and activations); the cosine
    and the scores are computed in float32 either way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        processor_path: str | os.PathLike[str] | None = None,
        model: CLIPModel | None = None,
        processor: CLIPProcessor | None = None,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        batch_size: int = 16,
    ) -> None:
        """Load the model from ``path`` (else ``GROUPWISE_PICKSCORE_DIR``) and the processor from
        ``processor_path`` (else ``GROUPWISE_CLIP_PROCESSOR_DIR``), unless ``model`` and
        ``processor`` are given (benchmarks build them in memory). ``batch_size`` images go
        through the model at once; ``device`` defaults to the GPU when there is one."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported: use {' or '.join(DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if model is None or processor is None:
            from transformers import CLIPModel, CLIPProcessor

            model_dir = model_directory(path)
            processor_dir = processor_directory(processor_path, model_dir)
            model = CLIPModel.from_pretrained(model_dir, local_files_only=True)
            processor = CLIPProcessor.from_pretrained(processor_dir, local_files_only=True)
        self.device = torch.device(device or default_device())
        self.dtype = DTYPES[dtype]
        # nn.Module's own ``to``, which moves in place: transformers wraps its override in a
        # decorator that type checkers cannot follow.
        torch.nn.Module.to(model, device=self.device, dtype=self.dtype)
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        check_batch(images, prompts, metadata)
        step = self.batch_size
        with torch.inference_mode():
            scores = [
                self._score(images[start : start + step], prompts[start : start + step])
                for start in range(0, len(prompts), step)
            ]
        return RewardOutput(np.concatenate(scores).astype(np.float64) if scores else np.zeros(0))

    def _score(self, images: Images, prompts: Sequence[str]) -> np.ndarray:
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")
        text = self.processor.tokenizer(
            list(prompts), padding=True, truncation=True, return_tensors="pt"
        )
        vision = self.model.vision_model(
            pixel_values=pixels["pixel_values"].to(self.device, self.dtype)
        )
        words = self.model.text_model(
            input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device),
        )
        image_embeds = self.model.visual_projection(vision.pooler_output).float()
        text_embeds = self.model.text_projection(words.pooler_output).float()
        cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        scale = self.model.logit_scale.float().exp()
        return (scale * cosine / SCALE_DIVISOR).cpu().numpy()
