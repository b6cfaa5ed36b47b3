"""Servers for the client's tests: sglang 0.5.23's own code (``harness``) and the compatible
server, each in a subprocess on 127.0.0.1, killed at the end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.models.tiny.model import TinyModel
from engine.models.tiny.weights import load_tiny
from tests.sglang_d.harness.wheel import unpacked

ROOT = Path(__file__).resolve().parents[2]
Start = Callable[..., tuple[str, subprocess.Popen[str]]]


@pytest.fixture(scope="session")
def sglang_wheel() -> Path:
    """The unpacked release (fetched once; a failure to fetch it fails the tests)."""
    return unpacked()


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    return load_tiny()


@pytest.fixture(scope="session")
def start(sglang_wheel) -> Iterator[Start]:
    """``start(kind, *flags)`` runs a server, ``kind`` "sglang" (the harness) or "groupwise"
    (``python -m engine serve-rollout``), and returns (url, process) once it listens."""
    processes: list[subprocess.Popen[str]] = []

    def run(kind: str, *flags: str) -> tuple[str, subprocess.Popen[str]]:
        command = (
            [sys.executable, "-m", "tests.sglang_d.harness.server", *flags]
            if kind == "sglang"
            else [sys.executable, "-m", "engine", "serve-rollout", "--model", "tiny", *flags]
        )
        process = subprocess.Popen(
            [*command, "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        processes.append(process)
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("serving on "):
                return line.split()[-1], process
        raise RuntimeError(f"{kind} server exited with {process.wait()} before serving")

    yield run
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(scope="module", params=["sglang", "groupwise"])
def server(request, start) -> tuple[str, str]:
    """(kind, url) of each server in turn: the conformance tests run against both."""
    return request.param, start(request.param)[0]


@pytest.fixture(scope="module")
def sglang_url(start) -> str:
    return start("sglang")[0]


@pytest.fixture(scope="module")
def packed_url(start) -> str:
    """sglang's code keeping the latents packed 2 x 2, as its Qwen-Image pipeline does."""
    return start("sglang", "--packed")[0]
