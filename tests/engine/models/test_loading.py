from __future__ import annotations

import json

import pytest
import torch

from engine.models import ModelLoadError, load_model, resolve_model_dir
from engine.models.tiny.model import TinyModel
from engine.models.tiny.weights import BUILTIN_DIR
from tests.engine.models import tiny_pipelines


def test_model_path_wins_over_the_model_dir(tmp_path):
    assert resolve_model_dir("a", tmp_path) == resolve_model_dir("a", None)
    assert resolve_model_dir(None, tmp_path) == tmp_path
    assert resolve_model_dir("", None) is None


def test_tiny_without_a_directory_is_the_builtin_model():
    assert isinstance(load_model("tiny", None), TinyModel)


def test_tiny_from_a_directory():
    assert isinstance(load_model("tiny", BUILTIN_DIR), TinyModel)


def test_a_family_without_builtin_weights_names_both_settings():
    with pytest.raises(ModelLoadError, match=r"model\.path.*GROUPWISE_MODEL_DIR"):
        load_model("qwen-image", None)


def test_a_missing_directory_names_both_settings(tmp_path):
    with pytest.raises(
        ModelLoadError, match=r"does not exist: fix model\.path.*GROUPWISE_MODEL_DIR"
    ):
        load_model("sd3", tmp_path / "nowhere")


def test_a_directory_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model_index\.json is missing or unreadable"):
        load_model("flux", tmp_path)


def test_another_familys_directory_names_the_right_family(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelLoadError, match=r"set model\.family='flux'"):
        load_model("sd3", tmp_path)


def test_an_unsupported_pipeline_lists_the_supported_ones(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelLoadError, match="supported are StableDiffusion3Pipeline"):
        load_model("sd3", tmp_path)


def test_an_unknown_family_is_refused():
    with pytest.raises(ModelLoadError, match=r"model\.family='sd4'"):
        load_model("sd4", None)


def _components(model) -> dict[str, torch.nn.Module]:
    """Every weight-holding component a family loads: the DiT, its text encoders, its VAE."""
    found = {"transformer": model.transformer}
    found.update({f"text_encoder[{i}]": e for i, e in enumerate(model.text_encoders())})
    vae = getattr(getattr(model, "pipeline", None), "vae", None)
    if vae is not None:
        found["vae"] = vae
    return found


@pytest.mark.parametrize("family", ["tiny", "sd3", "flux", "qwen-image"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_every_component_loads_in_the_model_dtype(tmp_path, family, dtype):
    save = {
        "sd3": tiny_pipelines.save_sd3,
        "flux": tiny_pipelines.save_flux,
        "qwen-image": tiny_pipelines.save_qwen_image,
    }
    directory = save[family](tmp_path / family) if family in save else None
    model = load_model(family, directory, dtype=dtype)
    components = _components(model)
    # tiny: DiT + its encoder; sd3: DiT, CLIP-L, CLIP-G, T5, VAE; flux: DiT, CLIP, T5, VAE;
    # qwen-image: DiT, Qwen2.5-VL, VAE.
    assert len(components) == {"tiny": 2, "sd3": 5, "flux": 4, "qwen-image": 3}[family]
    for name, module in components.items():
        # transformers keeps the layers a class names in float32 when loading in float16 (T5's
        # ``wo``, whose activations overflow float16's range); every other weight is in dtype.
        kept = getattr(module, "_keep_in_fp32_modules", None) or []
        for param_name, param in module.named_parameters():
            wanted = (
                torch.float32
                if dtype == torch.float16 and any(k in param_name.split(".") for k in kept)
                else dtype
            )
            assert param.dtype == wanted, (name, param_name, param.dtype)
    assert model.dtype == dtype
