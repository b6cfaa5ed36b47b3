"""The shipped tiny model, loaded once for the rollout tests."""

from __future__ import annotations

import pytest

from engine.tiny.model import TinyModel
from engine.tiny.weights import load_tiny


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    return load_tiny()
