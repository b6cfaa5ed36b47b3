"""The background scorer: batches scored on another thread, in order, with their timings."""

import threading

import numpy as np
import pytest

from engine.rewards import RewardOutput
from engine.rewards.color import ColorReward
from engine.rewards.scorer import RewardScorer, ScoredBatch, ScoredRollout


def solid(value, count=2):
    return np.full((count, 2, 2, 3), value, dtype=np.uint8)


class Gated:
    """A reward that signals when it starts scoring and waits for the test to let it finish."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads = []

    def __call__(self, images, prompts, metadata):
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(timeout=30)
        return RewardOutput(images.reshape(len(images), -1).mean(axis=1) / 255.0)


def test_a_batch_is_scored_while_the_caller_goes_on():
    reward = Gated()
    with RewardScorer(reward) as scorer:
        first = scorer.submit(solid(255), ["a", "b"], [{}, {}])
        # The reward is running on its thread while this one is free to generate the next batch.
        assert reward.started.wait(timeout=30)
        assert not first.done()
        second = scorer.submit(solid(0), ["c", "d"], [{}, {}])
        reward.release.set()
        rollout = scorer.results()
    assert first.result().index == 0 and second.result().index == 1
    assert [b.output.scores.tolist() for b in rollout.batches] == [[1.0, 1.0], [0.0, 0.0]]
    assert rollout.scores().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert all(name.startswith("reward") for name in reward.threads)
    assert rollout.reward_seconds == pytest.approx(sum(b.seconds for b in rollout.batches))
    assert rollout.wait_seconds >= 0


def test_results_start_afresh_and_keep_components_in_order():
    with RewardScorer(ColorReward()) as scorer:
        scorer.submit(solid(0, 1), ["a black image"], [{}])
        assert len(scorer.results().batches) == 1
        scorer.submit(solid(255, 1), ["a white image"], [{}])
        scorer.submit(solid(0, 2), ["a white image"] * 2, [{}, {}])
        rollout = scorer.results()
    assert [b.index for b in rollout.batches] == [0, 1]
    np.testing.assert_allclose(rollout.scores(), [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rollout.components()["mean_red"], [1.0, 0.0, 0.0])


def test_the_caller_may_reuse_its_buffer_after_submitting():
    reward = Gated()
    buffer = solid(255)
    with RewardScorer(reward) as scorer:
        scorer.submit(buffer, ["a", "b"], [{}, {}])
        buffer[:] = 0
        reward.release.set()
        assert scorer.results().scores().tolist() == [1.0, 1.0]


def test_an_error_reaches_the_caller_after_every_batch_finished():
    calls = []

    def reward(images, prompts, metadata):
        calls.append(prompts[0])
        if prompts[0] == "bad":
            raise RuntimeError("reward model crashed")
        return RewardOutput(np.ones(len(prompts)))

    with RewardScorer(reward) as scorer:
        scorer.submit(solid(0, 1), ["bad"], [{}])
        scorer.submit(solid(0, 1), ["good"], [{}])
        with pytest.raises(RuntimeError, match="reward model crashed"):
            scorer.results()
        assert calls == ["bad", "good"]
        with pytest.raises(ValueError, match="2 images need 2 prompts"):
            scorer.submit(solid(0), ["only one"], [{}])


def test_hidden_fraction():
    batch = ScoredBatch(0, RewardOutput(np.ones(1)), 2.0)
    assert ScoredRollout((batch,), 2.0, 0.5).hidden_fraction == 0.75
    assert ScoredRollout((batch,), 2.0, 3.0).hidden_fraction == 0.0
    assert ScoredRollout((), 0.0, 0.0).hidden_fraction == 1.0
    assert ScoredRollout((), 0.0, 0.0).scores().shape == (0,)
