"""The shipped tiny model, loaded once for the rollout tests, and compatible rollout servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.models.tiny.model import TinyModel
from engine.models.tiny.weights import load_tiny

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    return load_tiny()


@pytest.fixture(scope="session")
def start_server():
    """Start ``python -m engine serve-rollout --model tiny --port 0`` processes; each call
    returns (url, process) once the server printed its URL. All are killed at the end."""
    processes: list[subprocess.Popen[str]] = []

    def start() -> tuple[str, subprocess.Popen[str]]:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve-rollout", "--model", "tiny", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        processes.append(process)
        assert process.stdout is not None
        # The readiness line: printed after the socket is bound, so requests can follow.
        for line in process.stdout:
            if line.startswith("serving on "):
                return line.split()[-1], process
        raise RuntimeError(f"rollout server exited with {process.wait()} before serving")

    yield start
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def server_url(start_server) -> str:
    """A shared compatible server with the shipped tiny weights (tests must not change them)."""
    return start_server()[0]


@pytest.fixture(scope="session")
def scratch_server_url(start_server) -> str:
    """A server whose transformer tests may overwrite with full weights (never LoRA adapters:
    a full load after them would not fit)."""
    return start_server()[0]
