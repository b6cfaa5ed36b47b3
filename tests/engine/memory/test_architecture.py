"""Parameter counts from configs: the shipped counts equal a meta build, and a meta build equals
``sum(p.numel())`` of the models the project loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.memory.architecture import (
    SHIPPED,
    ArchitectureError,
    measure_directory,
    measure_shipped,
    shipped,
)
from engine.models.loading import load_model
from engine.policy import Policy
from engine.recipe import ModelConfig
from tests.engine.models import tiny_pipelines

SAVE = {
    "sd3": tiny_pipelines.save_sd3,
    "flux": tiny_pipelines.save_flux,
    "qwen-image": tiny_pipelines.save_qwen_image,
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_shipped_counts_are_a_meta_build_of_the_shipped_configs(name):
    # counts.json is written by `python -m engine.memory.architecture`; a config edited without
    # rerunning it fails here.
    assert shipped(name) == measure_shipped(name)


def test_the_published_model_sizes():
    # Sizes as the model cards state them: Qwen-Image's DiT 20.43 B (issue 17), Qwen2.5-VL-7B
    # 8.29 B, FLUX.1-dev 11.9 B, SD3.5 Large 8.1 B, T5-XXL's encoder 4.76 B, CLIP-L with its
    # projection 123.65 M, OpenCLIP bigG's text tower with its projection 694.66 M.
    qwen, flux = shipped("qwen-image"), shipped("flux.1-dev")
    large, medium = shipped("sd3.5-large"), shipped("sd3.5-medium")
    assert round(qwen.transformer.params / 1e9, 2) == 20.43
    assert round(qwen.text_encoders[0].params / 1e9, 2) == 8.29
    assert round(flux.transformer.params / 1e9, 1) == 11.9
    assert round(large.transformer.params / 1e9, 1) == 8.1
    clip_l, clip_g, t5 = medium.text_encoders
    assert (clip_l.class_name, clip_g.class_name, t5.class_name) == (
        "CLIPTextModelWithProjection",
        "CLIPTextModelWithProjection",
        "T5EncoderModel",
    )
    assert round(t5.params / 1e9, 2) == 4.76
    assert round(clip_l.params / 1e6, 2) == 123.65
    assert round(clip_g.params / 1e6, 2) == 694.66
    # FLUX's CLIP-L has no projection: 768 x 768 fewer weights.
    assert flux.text_encoders[0].params == clip_l.params - 768 * 768
    # 60 Qwen-Image blocks; SD3.5 Medium's first 13 blocks have the second attention.
    assert qwen.dit.blocks == {"QwenImageTransformerBlock": 60}
    assert medium.dit.blocks == {"JointTransformerBlock+dual": 13, "JointTransformerBlock": 11}
    assert flux.dit.blocks == {"FluxTransformerBlock": 19, "FluxSingleTransformerBlock": 38}


def _loaded(model, name):
    if model.family == "tiny":
        return {"transformer": model.transformer, "text_encoder": model.text_encoder}[name]
    return getattr(model.pipeline, name)


@pytest.mark.parametrize("family", ["tiny", "sd3", "flux", "qwen-image"])
def test_a_meta_build_counts_what_loading_builds(tmp_path, family):
    directory = SAVE[family](tmp_path / family) if family in SAVE else None
    counted = measure_shipped("tiny") if directory is None else measure_directory(directory)
    model = load_model(family, directory)
    components = [counted.transformer, *counted.text_encoders]
    if counted.vae is not None:
        components.append(counted.vae)
    # tiny: DiT + encoder; sd3: DiT, 3 encoders, VAE; flux: DiT, 2 encoders, VAE; qwen: 3.
    assert len(components) == {"tiny": 2, "sd3": 5, "flux": 4, "qwen-image": 3}[family]
    for component in components:
        module = _loaded(model, component.name)
        assert component.params == sum(p.numel() for p in module.parameters()), component.name
        floating = sum(b.numel() for b in module.buffers() if b.is_floating_point())
        assert component.buffers == floating, component.name


@pytest.mark.parametrize("family", ["tiny", "sd3", "flux", "qwen-image"])
@pytest.mark.parametrize("target", ["attn", "attn+mlp"])
def test_lora_fan_times_the_rank_is_what_peft_adds(tmp_path, family, target):
    directory = SAVE[family](tmp_path / family) if family in SAVE else None
    counted = measure_shipped("tiny") if directory is None else measure_directory(directory)
    model = load_model(family, directory)
    policy = Policy(
        model,
        ModelConfig(family=family, lora_rank=3, lora_target=target),
        keep_reference=False,
        seed=0,
    )
    assert sum(p.numel() for p in policy.parameters) == 3 * counted.dit.lora_fan[target]


def test_a_directory_is_measured_again_after_its_config_changes(tmp_path):
    directory = tiny_pipelines.save_sd3(tmp_path / "sd3")
    before = measure_directory(directory)
    assert measure_directory(directory) is before  # cached
    config_file = directory / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config["num_layers"] += 1
    config_file.write_text(json.dumps(config))
    after = measure_directory(directory)
    assert sum(after.dit.blocks.values()) == sum(before.dit.blocks.values()) + 1
    assert after.transformer.params > before.transformer.params


def test_unreadable_configs_name_the_file(tmp_path):
    with pytest.raises(ArchitectureError, match=r"model_index\.json"):
        measure_directory(tmp_path)
    directory = tiny_pipelines.save_sd3(tmp_path / "sd3")
    (directory / "vae" / "config.json").write_text("{not json")
    with pytest.raises(ArchitectureError, match=r"vae/config\.json is missing or unreadable"):
        measure_directory(directory)
    bad = json.loads((directory / "transformer" / "config.json").read_text())
    bad["num_attention_heads"] = "many"
    Path(directory / "transformer" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ArchitectureError, match=r"does not build a SD3Transformer2DModel"):
        measure_directory(directory)
