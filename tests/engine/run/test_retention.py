import pytest

from engine.run.retention import checkpoints_to_keep


def test_keeps_the_newest_and_the_best_evaluated():
    steps = [10, 20, 30, 40, 50]
    rewards = {10: 0.2, 20: 0.9, 30: 0.5, 50: 0.4}
    assert checkpoints_to_keep(steps, rewards, keep_last=2) == {40, 50, 20}


def test_best_already_among_newest_adds_nothing():
    assert checkpoints_to_keep([10, 20, 30], {30: 0.9, 10: 0.1}, keep_last=1) == {30}


def test_a_reward_at_a_step_without_checkpoint_is_not_best():
    assert checkpoints_to_keep([10, 20, 30], {15: 1.0, 10: 0.3}, keep_last=1) == {30, 10}


def test_tie_prefers_the_later_step():
    assert checkpoints_to_keep([10, 20, 30, 40], {10: 0.5, 20: 0.5}, keep_last=1) == {40, 20}


def test_zero_keeps_everything_and_negative_is_refused():
    assert checkpoints_to_keep([3, 1, 2], {}, keep_last=0) == {1, 2, 3}
    with pytest.raises(ValueError, match="keep_last=-1"):
        checkpoints_to_keep([1], {}, keep_last=-1)


def test_fewer_checkpoints_than_kept():
    assert checkpoints_to_keep([5], {}, keep_last=3) == {5}
    assert checkpoints_to_keep([], {}, keep_last=3) == set()
