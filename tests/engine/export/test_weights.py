"""Weights export round trip: a short tiny run's export, loaded into a fresh model, redraws the
run's evaluation images; the adapter loads with diffusers; the snippet runs as printed."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.loaders import SD3LoraLoaderMixin
from PIL import Image

from engine import events
from engine.export.snippets import loading_snippet
from engine.export.weights import export_weights, lora_state_dict, merge_lora
from engine.export.zipstream import stream_zip, write_zip
from engine.models.loading import load_model
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.recipe import Recipe
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import evaluation_requests
from engine.rollout.types import RolloutRequest
from engine.run.checkpoint import (
    CheckpointError,
    CheckpointState,
    latest_checkpoint,
    save_checkpoint,
)
from engine.run.loop import EVAL_SAMPLES_PER_PROMPT, run
from tests.recipes import GROUPS_OF_TWO

# Two steps at a large learning rate, so the trained model draws visibly other images than
# the base model (else "reproduces the eval image" would hold for any weights).
SHORT = {
    "rollout_batch_size": 2,
    **GROUPS_OF_TWO,
    "max_steps": 2,
    "checkpoint_every": 2,
    "eval_every": 2,
    "eval_prompts": ["a red image", "a blue image"],
    "lr": 0.02,
    "num_inference_steps": 4,
    "eval_num_inference_steps": 4,
}


def short_recipe(**changes: Any) -> Recipe:
    return apply_overrides(PRESETS["tiny-color"].recipe, {**SHORT, **changes})


def train(out: Path, recipe: Recipe) -> events.EvaluationFinished:
    seen: list[events.Event] = []
    assert run(recipe, seen.append, out_dir=out).status == "finished"
    return [e for e in seen if isinstance(e, events.EvaluationFinished)][-1]


def eval_images(model: Any, recipe: Recipe) -> np.ndarray:
    requests = evaluation_requests(recipe, recipe.data.eval_prompts, EVAL_SAMPLES_PER_PROMPT)
    backend = InProcessBackend(model)
    return np.concatenate([backend.generate(request).images for request in requests])


def unpack(tmp: Path, checkpoint: Path, name: str) -> tuple[Any, Path]:
    """Export ``checkpoint`` to a zip, unzip it; the export and the unzipped folder."""
    exported = export_weights(checkpoint, tmp / "scratch", folder=name)
    archive = write_zip(exported.files, tmp / f"{name}.zip")
    with zipfile.ZipFile(archive) as opened:
        assert opened.testzip() is None
        opened.extractall(tmp / name)
    return exported, tmp / name


class TransformerOnlyPipeline(SD3LoraLoaderMixin):
    """What ``StableDiffusion3Pipeline.load_lora_weights`` needs of a pipeline: its DiT."""

    hf_device_map = None

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        self.text_encoder = self.text_encoder_2 = None

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recipe, Any]:
    out = tmp_path_factory.mktemp("full")
    recipe = short_recipe()
    return out, recipe, train(out, recipe)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recipe, Any]:
    out = tmp_path_factory.mktemp("lora")
    recipe = short_recipe(lora_target="attn", lr=0.05)
    return out, recipe, train(out, recipe)


def test_full_export_reproduces_the_runs_eval_images(full_run: Any, tmp_path: Path) -> None:
    out, recipe, evaluation = full_run
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    exported, folder = unpack(tmp_path, checkpoint, "run-1-step-000002")
    assert (exported.kind, exported.family, exported.step) == ("full", "tiny", 2)
    assert exported.snippet in (folder / "README.md").read_text()
    run_images = np.stack([sample.image for sample in evaluation.samples])
    assert not np.array_equal(eval_images(load_model("tiny", None), recipe), run_images)
    # Same weights, same seeds, same batches, ODE: the very same pixels.
    assert np.array_equal(eval_images(load_model("tiny", folder / "model"), recipe), run_images)


def test_lora_adapter_loads_with_diffusers_and_merged_model_matches(
    lora_run: Any, tmp_path: Path
) -> None:
    out, recipe, evaluation = lora_run
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    exported, folder = unpack(tmp_path, checkpoint, "lora-export")
    assert exported.kind == "lora"
    assert (folder / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    run_images = np.stack([sample.image for sample in evaluation.samples])
    base = load_model("tiny", None)
    assert not np.array_equal(eval_images(base, recipe), run_images)

    # The SD3 pipeline's own load_lora_weights (the snippet's call), on the tiny SD3 DiT; it
    # reads rank and alpha from the file's metadata: a wrong alpha would change the scale.
    TransformerOnlyPipeline(base.transformer).load_lora_weights(
        folder / "adapter", adapter_name="groupwise"
    )
    assert base.transformer.peft_config["groupwise"].lora_alpha == 16.0
    assert np.array_equal(eval_images(base, recipe), run_images)

    # Merging rounds W + s B A once instead of adding two products: a pixel level at most.
    merged = eval_images(load_model("tiny", folder / "model"), recipe).astype(int)
    assert np.abs(merged - run_images.astype(int)).max() <= 1


def test_the_snippet_runs_as_printed(
    full_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _recipe, _evaluation = full_run
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    exported, folder = unpack(tmp_path, checkpoint, "export")
    monkeypatch.chdir(tmp_path)
    exec(compile(exported.snippet, "snippet", "exec"), {})
    drawn = np.asarray(Image.open(tmp_path / "sample.png"))
    request = RolloutRequest(
        prompt="a red image", seeds=(0,), height=32, width=32, num_inference_steps=4
    )
    expected = InProcessBackend(load_model("tiny", folder / "model")).generate(request).images[0]
    assert np.array_equal(drawn, expected)


def test_a_corrupt_checkpoint_is_refused(full_run: Any, tmp_path: Path) -> None:
    out, _recipe, _evaluation = full_run
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    copy = tmp_path / "step-000002"
    copy.mkdir()
    for name in ("meta.json", "model.safetensors"):
        data = bytearray((checkpoint / name).read_bytes())
        if name == "model.safetensors":
            data[-1] ^= 0xFF
        (copy / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt: model\.safetensors"):
        export_weights(copy, tmp_path / "scratch", folder="x")
    with pytest.raises(CheckpointError, match=r"no readable meta\.json"):
        export_weights(tmp_path / "nowhere", tmp_path / "scratch", folder="x")


def test_lora_names_lose_the_adapter_name_and_full_weights_are_refused() -> None:
    weights = {
        "blocks.0.attn.to_q.lora_A.groupwise.weight": torch.zeros(2, 4),
        "blocks.0.attn.to_q.lora_B.groupwise.weight": torch.zeros(4, 2),
    }
    assert sorted(lora_state_dict(weights)) == [
        "blocks.0.attn.to_q.lora_A.weight",
        "blocks.0.attn.to_q.lora_B.weight",
    ]
    with pytest.raises(ValueError, match="lora_target='full'"):
        lora_state_dict({"blocks.0.attn.to_q.weight": torch.zeros(4, 4)})


def test_merge_adds_the_scaled_product() -> None:
    # W = I, A = [[1, 2]], B = [[3], [4]]: B A = [[3, 6], [4, 8]];
    # scale 0.5 gives W + [[1.5, 3], [2, 4]].
    base = {"layer.weight": torch.eye(2), "layer.bias": torch.ones(2)}
    adapter = {
        "layer.lora_A.weight": torch.tensor([[1.0, 2.0]]),
        "layer.lora_B.weight": torch.tensor([[3.0], [4.0]]),
    }
    merged = merge_lora(base, adapter, 0.5)
    assert torch.equal(merged["layer.weight"], torch.tensor([[2.5, 3.0], [2.0, 5.0]]))
    assert torch.equal(merged["layer.bias"], base["layer.bias"])
    with pytest.raises(ValueError, match="does not have"):
        merge_lora({}, adapter, 1.0)


@pytest.mark.parametrize(
    ("family", "target", "expected"),
    [
        ("sd3", "attn", ("StableDiffusion3Pipeline", 'pipe.load_lora_weights(f"{FOLDER}/adapter"')),
        ("flux", "attn+mlp", ("FluxPipeline", "guidance_scale=")),
        ("qwen-image", "attn", ("QwenImagePipeline", "true_cfg_scale=4.0")),
        ("sd3", "full", ("load_state_dict", "transformer.safetensors")),
    ],
)
def test_pipeline_snippets(family: str, target: str, expected: tuple[str, str]) -> None:
    recipe = apply_overrides(
        Recipe(), {"family": family, "lora_target": target, "true_cfg_scale": 4.0}
    )
    snippet = loading_snippet(recipe, "run-7-step-000010", base_model="/models/base")
    compile(snippet, "snippet", "exec")
    assert "FOLDER = 'run-7-step-000010'" in snippet
    assert "BASE = '/models/base'" in snippet
    for text in expected:
        assert text in snippet
    assert "/path/to/" in loading_snippet(recipe, "x")


def test_every_family_writer_is_a_mixin_of_its_pipeline() -> None:
    """The adapter is written by the mixin whose load_lora_weights the snippet calls."""
    import diffusers
    from diffusers import loaders

    from engine.export.snippets import PIPELINES
    from engine.export.weights import LORA_WRITERS

    for family, pipeline in PIPELINES.items():
        mixin = getattr(loaders, LORA_WRITERS[family])
        assert issubclass(getattr(diffusers, pipeline), mixin)
        assert hasattr(mixin, "load_lora_weights") and hasattr(mixin, "save_lora_weights")


def large_full_checkpoint(out: Path) -> Path:
    """A full fine-tune checkpoint of an SD3 run, as the trainer saves one (its weights a
    stand-in: the export sends the file as stored, whatever tensors it holds)."""
    recipe = apply_overrides(Recipe(), {"family": "sd3", "lora_target": "full"})
    weights = {"blocks.0.weight": torch.arange(3000, dtype=torch.float32).reshape(30, 100)}
    state = CheckpointState(
        step=4, recipe=recipe.to_dict(), model=weights, optimizer={}, rng={"torch": 0}
    )
    return save_checkpoint(out, state)


def test_a_large_full_fine_tune_streams_its_weights_file_as_stored(tmp_path: Path) -> None:
    checkpoint = large_full_checkpoint(tmp_path / "run")
    stored = (checkpoint / "model.safetensors").read_bytes()
    exported, folder = unpack(tmp_path, checkpoint, "run-3-step-000004")
    assert (exported.kind, exported.family, exported.step) == ("full", "sd3", 4)
    assert (folder / "transformer.safetensors").read_bytes() == stored
    assert not (tmp_path / "scratch").exists()  # nothing generated, nothing copied


def test_a_large_full_fine_tune_is_verified_as_it_is_sent(tmp_path: Path) -> None:
    """Its gigabytes are read once, while they are sent: a flipped byte is found after the
    last chunk, and the archive stops before its central directory (no unzip accepts it)."""
    checkpoint = large_full_checkpoint(tmp_path / "run")
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    exported = export_weights(checkpoint, tmp_path / "scratch", folder="x")
    chunks: list[bytes] = []
    with pytest.raises(CheckpointError, match=r"corrupt: model\.safetensors"):
        for chunk in stream_zip(exported.files):
            chunks.append(chunk)
    assert bytes(data) in b"".join(chunks)  # sent whole before the check
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
