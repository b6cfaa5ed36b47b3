from __future__ import annotations

import pytest

from engine.rollout import RolloutRequest


def _request(**changes):
    values = {"prompt": "a red image", "seeds": (1, 2), "height": 32, "width": 32}
    values |= {"num_inference_steps": 8, "sde_step_indices": (2, 3)}
    return RolloutRequest(**(values | changes))


def test_request_counts_its_outputs():
    assert _request().num_outputs == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": ()}, "seeds is empty"),
        ({"sde_step_indices": (1, 3)}, "must be consecutive"),
        ({"sde_step_indices": (7, 8)}, "must lie in 0..7"),
    ],
)
def test_invalid_requests_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _request(**changes)
