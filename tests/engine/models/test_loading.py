from __future__ import annotations

import json

import pytest

from engine.models import ModelLoadError, load_model, resolve_model_dir
from engine.tiny.model import TinyModel
from engine.tiny.weights import BUILTIN_DIR


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
