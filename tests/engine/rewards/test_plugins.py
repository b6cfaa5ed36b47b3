"""Rewards from installed packages: a test package with an entry point, found by the registry.

The package is installed the way pip leaves one in site-packages (the module beside a
``.dist-info`` holding ``METADATA`` and ``entry_points.txt``), in a directory put on ``sys.path``,
so ``importlib.metadata`` finds it exactly as it finds an installed distribution.
"""

import logging
import os
import sys
import textwrap

import numpy as np
import pytest

from engine.rewards import build_reward, reward_entry, reward_names, unregister_reward
from engine.rewards.plugins import discover_rewards, forget_plugin

MODULE = '''
import numpy as np

from engine.rewards import RewardOutput


class BrightnessReward:
    """Mean brightness of the image, in [0, 1]."""

    def __call__(self, images, prompts, metadata):
        mean = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return RewardOutput(mean, {"max": images.reshape(len(images), -1).max(axis=1) / 255.0})


class ThresholdReward:
    """1 where the brightness passes the threshold stored in the weights directory."""

    needs_path = True
    path_setting = "GW_TEST_THRESHOLD_DIR"

    def __init__(self, path):
        with open(f"{path}/threshold.txt") as handle:
            self.threshold = float(handle.read())

    def __call__(self, images, prompts, metadata):
        mean = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return RewardOutput((mean > self.threshold).astype(float))


NOT_A_FACTORY = 42
'''

ENTRY_POINTS = """
[groupwise.rewards]
brightness = gw_test_plugin:BrightnessReward
threshold = gw_test_plugin:ThresholdReward
not_callable = gw_test_plugin:NOT_A_FACTORY
missing_module = gw_test_absent_module:Reward
color = gw_test_plugin:BrightnessReward
"""

PLUGIN_NAMES = ["brightness", "threshold", "not_callable", "missing_module"]


@pytest.fixture
def installed(tmp_path):
    """Install the test package into a site directory on sys.path; remove every trace after."""
    (tmp_path / "gw_test_plugin.py").write_text(MODULE)
    info = tmp_path / "gw_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gw-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("gw_test_plugin", None)
    for name in PLUGIN_NAMES:
        if name in reward_names():
            unregister_reward(name)
        forget_plugin(name)


def test_an_installed_plugin_is_registered_and_builds(installed, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.rewards.plugins"):
        added = discover_rewards()
    assert added == ["brightness", "threshold"]
    assert {"brightness", "threshold"} <= set(reward_names())
    entry = reward_entry("brightness")
    assert entry.description == "Mean brightness of the image, in [0, 1]."
    assert not entry.needs_path

    images = np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)])
    output = build_reward("brightness")(images, ["a", "b"], [{}, {}])
    assert output.scores.tolist() == [0.0, 1.0]
    assert output.components["max"].tolist() == [0.0, 1.0]

    # A plugin with weights gets its directory, from the recipe or its own variable.
    (installed / "threshold.txt").write_text("0.5")
    assert reward_entry("threshold").needs_path
    assert build_reward("threshold", str(installed))(
        images, ["a", "b"], [{}, {}]
    ).scores.tolist() == [
        0.0,
        1.0,
    ]
    # ... or from the environment variable the factory names.
    os.environ["GW_TEST_THRESHOLD_DIR"] = str(installed)
    try:
        assert build_reward("threshold").threshold == 0.5
    finally:
        del os.environ["GW_TEST_THRESHOLD_DIR"]
    # Discovering again adds nothing twice.
    assert discover_rewards() == []


def test_broken_plugins_are_reported_not_fatal(installed, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.rewards.plugins"):
        discover_rewards()
    assert "not_callable" not in reward_names()
    with pytest.raises(KeyError, match="reward 'not_callable' comes from a plugin that failed: "):
        build_reward("not_callable")
    with pytest.raises(KeyError, match=r"gw_test_absent_module:Reward .* cannot be imported"):
        reward_entry("missing_module")
    # A plugin cannot take a built-in's name.
    assert "the name 'color' is already taken" in caplog.text
    assert reward_entry("color").factory == "engine.rewards.color:ColorReward"
