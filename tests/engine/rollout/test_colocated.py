"""Colocated mode: the server starts for the run, answers /health, and never outlives the block."""

from __future__ import annotations

import shlex
import sys
import urllib.request
from contextlib import ExitStack

import pytest
import torch

from engine.net.egress import EgressPolicy
from engine.overrides import apply_overrides
from engine.recipe import Recipe
from engine.rollout.colocated import ColocatedServer, ServerStartError
from engine.rollout.launch import SERVER_COMMAND_SETTING, remote_backend, server_command
from engine.rollout.sglang import RolloutServerError, SGLangBackend

PYTHON = shlex.quote(sys.executable)


def test_starts_the_compatible_server_waits_for_health_and_stops_it(tmp_path):
    server = ColocatedServer(
        f"{PYTHON} -m engine serve-rollout", "tiny", log_path=tmp_path / "server.log"
    )
    assert server.argv[-6:] == ["--model-path", "tiny", "--host", "127.0.0.1", "--port",
                                str(server.port)]  # fmt: skip
    with server:
        with urllib.request.urlopen(server.url + "/health", timeout=30) as answer:
            assert answer.status == 200
        SGLangBackend([server.url]).check_servers()
        process = server.process
        assert process is not None and process.poll() is None
    assert process.poll() is not None


def test_a_server_in_another_dtype_than_the_run_is_refused_at_start_up(tmp_path):
    server = ColocatedServer(
        f"{PYTHON} -m engine serve-rollout --dtype bfloat16", "tiny", log_path=tmp_path / "log"
    )
    with server:
        SGLangBackend([server.url], dtype="bfloat16").check_servers()
        with pytest.raises(
            RolloutServerError,
            match=rf"another dtype than the run's float32 \(model.dtype\): {server.url} in "
            r"bfloat16: restart them with --dtype float32, or set model.dtype=bfloat16",
        ):
            SGLangBackend([server.url], dtype="float32").check_servers()


def test_a_server_that_exits_at_start_up_is_reported_with_its_output(tmp_path):
    command = f"{PYTHON} -c \"import sys; print('no GPU here'); sys.exit(3)\""
    server = ColocatedServer(command, "tiny", log_path=tmp_path / "server.log")
    with pytest.raises(ServerStartError, match=r"exited with code 3 .*\n.*no GPU here"):
        server.__enter__()


def test_a_server_never_healthy_is_stopped_at_the_deadline(tmp_path):
    command = (
        f"{PYTHON} -c \"import sys; sys.stdin.read() if False else __import__('time').sleep(600)\""
    )
    server = ColocatedServer(command, "tiny", log_path=tmp_path / "server.log", startup_timeout=0.5)
    with pytest.raises(ServerStartError, match=r"not healthy after 0\.5 s"):
        server.__enter__()
    assert server.process is not None and server.process.poll() is not None


def test_the_command_is_the_hosts_and_the_server_is_on_its_loopback(tmp_path, monkeypatch):
    # The host's setting names the command; the colocated server is reached on the worker's
    # loopback even where the egress policy lists nothing.
    monkeypatch.setenv(SERVER_COMMAND_SETTING, f"{PYTHON} -m engine serve-rollout")
    monkeypatch.setenv("GROUPWISE_EGRESS_ALLOW", "")
    recipe = apply_overrides(Recipe(), {"backend": "sglang", "launch": "colocated"})
    with ExitStack() as resources:
        backend = remote_backend(recipe, None, tmp_path, resources, torch.float32)
        assert backend.egress == EgressPolicy.loopback()
        (server,) = backend.servers
        assert server.kind == "groupwise"


def test_sglang_is_the_default_command(monkeypatch):
    monkeypatch.delenv(SERVER_COMMAND_SETTING, raising=False)
    assert server_command() == "sglang serve"
    monkeypatch.setenv(SERVER_COMMAND_SETTING, "  ")
    assert server_command() == "sglang serve"
