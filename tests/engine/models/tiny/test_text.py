from __future__ import annotations

import torch

from engine.models.tiny.text import TinyTextConfig, TinyTokenizer
from engine.models.tiny.weights import load_tiny

COLOR_PROMPTS = ["a red image", "a green image", "a blue image", "a yellow image"]


def test_tokenizer_is_fixed_length_and_hashes_unknown_words_stably():
    tokenizer = TinyTokenizer(TinyTextConfig())
    ids, mask = tokenizer(["A red image!", "zebra zebra"])
    assert ids.shape == mask.shape == (2, 12)
    assert mask[0].sum() == 4 and mask[1].sum() == 3
    assert ids[1, 1] == ids[1, 2] == tokenizer.word_id("zebra")
    assert tokenizer.word_id("zebra") == TinyTokenizer(TinyTextConfig()).word_id("zebra")


def test_colour_prompts_have_well_separated_conditioning():
    conditioning = load_tiny().encode_prompts(COLOR_PROMPTS)
    pooled = torch.nn.functional.normalize(conditioning.positive["pooled"], dim=1)
    similarity = pooled @ pooled.T
    off_diagonal = similarity[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.max() < 0.9
