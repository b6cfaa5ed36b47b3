"""Web personas: the owner of a run, another user, and staff."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Rate-limit counters live in the cache, keyed by user id; ids repeat from test to test as
    each test's database is rolled back, so every test starts with empty counters."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("owner", password="owner-pass-123")


@pytest.fixture
def other(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("other", password="other-pass-123")


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True)


#: A headless run small enough for a few seconds on a CPU: 2 prompts x 2 samples, 2 steps,
#: a checkpoint after each, an evaluation of one prompt at the end.
HEADLESS_OVERRIDES = (
    "rollout_batch_size=2",
    "n_samples_per_prompt=2",
    "diffusion_microgroup_size=2",
    "micro_batch_size_sample=2",
    "num_inference_steps=4",
    "eval_num_inference_steps=4",
    "max_steps=2",
    "checkpoint_every=1",
    "eval_every=2",
    'eval_prompts=["a red image"]',
)


@pytest.fixture(scope="session")
def headless_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The --out folder of ``python -m engine train --preset tiny-color`` (in-process)."""
    import io

    from engine.cli.main import main

    out = tmp_path_factory.mktemp("headless") / "cli-run"
    arguments = ["train", "--preset", "tiny-color", "--out", str(out)]
    for override in HEADLESS_OVERRIDES:
        arguments += ["--set", override]
    assert main(arguments, out=io.StringIO()) == 0
    return out
