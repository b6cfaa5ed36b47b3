"""The suite's poll loop: returns the first truthy value, names what it waited for on timeout."""

from __future__ import annotations

import pytest

from tests.waiting import wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), 60, interval=0) == "ready"


def test_a_timeout_names_what_was_waited_for_the_last_value_and_the_context() -> None:
    with pytest.raises(TimeoutError) as raised:
        wait_until(lambda: [], 0, what="the worker", context=lambda: "worker log")
    assert str(raised.value) == (
        "timed out after 0 s waiting for the worker (last observed: []):\nworker log"
    )


def test_an_exception_of_the_condition_propagates_at_once() -> None:
    def exited() -> bool:
        raise AssertionError("serve exited (1)")

    with pytest.raises(AssertionError, match="serve exited"):
        wait_until(exited, 60)
