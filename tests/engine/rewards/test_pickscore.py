"""PickScore on a tiny random CLIP, saved in transformers format and loaded by the real loader."""

import math
import re

import numpy as np
import pytest
import torch

from engine.rewards import build_reward
from engine.rewards.pickscore import PickScoreReward

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

LOGIT_SCALE = 50.0
PROMPTS = ["a red cat", "a blue dog", "a very long prompt that is cut at the tiny token limit"]


def tiny_clip():
    """A two-layer CLIP over a byte-level vocabulary (no merges), its processor beside it."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    layers = {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            **layers,
        ),
        vision_config=dict(hidden_size=32, image_size=32, patch_size=8, **layers),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    return model, transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The model and the processor saved in separate directories, as PickScore ships them."""
    root = tmp_path_factory.mktemp("pickscore")
    model, processor = tiny_clip()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "processor")
    return root / "model", root / "processor"


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)


def expected_scores(model_dir, processor_dir, images, prompts):
    """The formula through another path: CLIP's own forward gives logit_scale.exp() x cosine as
    ``logits_per_image``; its diagonal pairs each image with its prompt."""
    model = transformers.CLIPModel.from_pretrained(model_dir).eval()
    processor = transformers.CLIPProcessor.from_pretrained(processor_dir)
    inputs = processor(
        text=list(prompts), images=list(images), padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    return (logits.diagonal() / 26).numpy()


def test_scores_follow_the_formula(saved, images):
    model_dir, processor_dir = saved
    reward = PickScoreReward(model_dir, processor_path=processor_dir, device="cpu", batch_size=2)
    output = reward(images, PROMPTS, [{}] * 3)
    assert output.scores.shape == (3,)
    assert output.scores.dtype == np.float64
    assert np.all(np.isfinite(output.scores))
    expected = expected_scores(model_dir, processor_dir, images, PROMPTS)
    np.testing.assert_allclose(output.scores, expected, rtol=1e-4, atol=1e-5)
    # The scale is the saved one: cosines lie in [-1, 1], so scores in +-50 / 26.
    assert np.all(np.abs(output.scores) <= LOGIT_SCALE / 26 + 1e-6)


def test_batching_does_not_change_scores(saved, images):
    model_dir, processor_dir = saved
    one = PickScoreReward(model_dir, processor_path=processor_dir, device="cpu", batch_size=1)
    all_ = PickScoreReward(model_dir, processor_path=processor_dir, device="cpu", batch_size=16)
    np.testing.assert_allclose(
        one(images, PROMPTS, [{}] * 3).scores, all_(images, PROMPTS, [{}] * 3).scores, atol=1e-5
    )


def test_bfloat16_is_close_to_float32(saved, images):
    model_dir, processor_dir = saved
    full = PickScoreReward(model_dir, processor_path=processor_dir, device="cpu")
    half = PickScoreReward(model_dir, processor_path=processor_dir, device="cpu", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    np.testing.assert_allclose(
        half(images, PROMPTS, [{}] * 3).scores, full(images, PROMPTS, [{}] * 3).scores, atol=0.05
    )


def test_the_registry_builds_it_from_the_environment(saved, images, monkeypatch):
    model_dir, processor_dir = saved
    monkeypatch.setenv("GROUPWISE_PICKSCORE_DIR", str(model_dir))
    monkeypatch.setenv("GROUPWISE_CLIP_PROCESSOR_DIR", str(processor_dir))
    reward = build_reward("pickscore")
    assert isinstance(reward, PickScoreReward)
    assert reward(images[:1], PROMPTS[:1], [{}]).scores.shape == (1,)


def test_missing_directories_name_their_settings(saved, tmp_path, monkeypatch):
    model_dir, _ = saved
    monkeypatch.delenv("GROUPWISE_PICKSCORE_DIR", raising=False)
    monkeypatch.delenv("GROUPWISE_CLIP_PROCESSOR_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set GROUPWISE_PICKSCORE_DIR"):
        PickScoreReward()
    with pytest.raises(FileNotFoundError, match=f"is '{re.escape(str(tmp_path))}', which has no"):
        PickScoreReward(tmp_path)
    message = "GROUPWISE_CLIP_PROCESSOR_DIR is unset and the model directory"
    with pytest.raises(FileNotFoundError, match=message):
        PickScoreReward(model_dir)
    with pytest.raises(ValueError, match="dtype='float16' is not supported"):
        PickScoreReward(model_dir, dtype="float16")
