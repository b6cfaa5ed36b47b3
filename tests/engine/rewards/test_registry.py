"""The reward registry: names, lazy factories and weights paths."""

import re

import numpy as np
import pytest

from engine.rewards import (
    RewardOutput,
    build_reward,
    register_reward,
    reward_entry,
    reward_names,
    reward_path,
    unregister_reward,
)
from engine.rewards.color import ColorReward


def test_built_in_names():
    assert reward_names() == ["color", "color_pixel", "ocr", "pickscore", "remote"]
    assert reward_entry("ocr").needs_path
    assert reward_entry("ocr").path_setting == "GROUPWISE_EASYOCR_DIR"
    assert reward_entry("pickscore").path_setting == "GROUPWISE_PICKSCORE_DIR"
    assert not reward_entry("color").needs_path
    assert not reward_entry("remote").needs_path


def test_build_a_built_in():
    reward = build_reward("color")
    assert isinstance(reward, ColorReward)
    output = reward(np.zeros((1, 2, 2, 3), np.uint8), ["a black image"], [{}])
    assert output.scores.tolist() == [1.0]


def test_paths_are_required_exactly_when_the_reward_has_weights(monkeypatch):
    monkeypatch.delenv("GROUPWISE_EASYOCR_DIR", raising=False)
    message = "reward 'ocr' loads its model from a local directory: set its path or GROUPWISE_EASY"
    with pytest.raises(ValueError, match=message):
        build_reward("ocr")
    with pytest.raises(ValueError, match="reward 'color' has no weights to load"):
        build_reward("color", "/weights")


def test_the_recipe_path_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("GROUPWISE_EASYOCR_DIR", "/from/env")
    assert reward_path("ocr") == "/from/env"
    assert reward_path("ocr", "/from/recipe") == "/from/recipe"
    monkeypatch.setenv("GROUPWISE_EASYOCR_DIR", "")
    assert reward_path("ocr") is None
    assert reward_path("color") is None


def test_unknown_name():
    with pytest.raises(KeyError, match="no reward named 'colour': use one of color, "):
        build_reward("colour")


@pytest.fixture
def registered():
    names = []

    def register(name, factory, **kwargs):
        register_reward(name, factory, description="test", **kwargs)
        names.append(name)

    yield register
    for name in names:
        unregister_reward(name)


def test_register_a_callable_with_weights(registered):
    seen = []

    def factory(path):
        seen.append(path)
        return lambda images, prompts, metadata: RewardOutput(np.ones(len(prompts)))

    registered("constant", factory, needs_path=True)
    reward = build_reward("constant", "/weights/constant")
    assert seen == ["/weights/constant"]
    assert reward(np.zeros((2, 1, 1, 3), np.uint8), ["a", "b"], [{}, {}]).scores.tolist() == [1, 1]
    assert "constant" in reward_names()


def test_a_lazy_factory_that_cannot_load_names_itself(registered):
    registered("missing", "engine.rewards.not_there:Missing")
    message = "reward 'missing' is registered but engine.rewards.not_there:Missing cannot be loaded"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        build_reward("missing")


def test_names_are_unique(registered):
    with pytest.raises(ValueError, match="a reward named 'color' is already registered"):
        registered("color", ColorReward)
