from __future__ import annotations

import shutil

import pytest
import torch

from engine.models.tiny.make_weights import pretrain
from engine.models.tiny.weights import (
    BUILTIN_DIR,
    TinyWeightsError,
    load_tiny,
    save_tiny,
    verify_checksums,
)


def test_shipped_weights_match_their_sha256_and_are_small():
    verify_checksums(BUILTIN_DIR)
    listed = {line.split()[1] for line in (BUILTIN_DIR / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(BUILTIN_DIR).as_posix() for p in BUILTIN_DIR.rglob("*") if p.is_file()}
    assert listed == on_disk - {"SHA256SUMS"}
    assert sum((BUILTIN_DIR / name).stat().st_size for name in listed) < 5_000_000


def test_shipped_model_has_its_configuration():
    model = load_tiny()
    assert model.family == "tiny"
    assert 200_000 < sum(p.numel() for p in model.transformer.parameters()) < 400_000


@pytest.fixture
def copy(tmp_path):
    target = tmp_path / "tiny"
    shutil.copytree(BUILTIN_DIR, target)
    return target


def test_a_corrupted_file_is_refused(copy):
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(
        TinyWeightsError, match=r"diffusion_pytorch_model\.safetensors does not match"
    ):
        load_tiny(copy)


def test_a_missing_file_or_checksum_list_is_refused(copy):
    (copy / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(TinyWeightsError, match="is missing: restore it"):
        load_tiny(copy)
    (copy / "SHA256SUMS").unlink()
    with pytest.raises(TinyWeightsError, match="SHA256SUMS is missing"):
        load_tiny(copy)


def test_make_weights_round_trips(tmp_path):
    model = pretrain(steps=2, batch=4, seed=1)
    save_tiny(model, tmp_path)
    loaded = load_tiny(tmp_path)
    conditioning = loaded.encode_prompts(["a red image"])
    latents, sigma = torch.randn(1, 3, 32, 32), torch.tensor([0.5])
    with torch.no_grad():
        expected = model.velocity(latents, sigma, model.encode_prompts(["a red image"]))
        assert torch.equal(loaded.velocity(latents, sigma, conditioning), expected)
