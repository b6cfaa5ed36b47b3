"""The SGLang-D client against compatible servers in subprocesses: same samples as in process,
the concurrency limit, a server killed mid-rollout, start-up and protocol errors, weight sync."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import events
from engine.layout import layout
from engine.models.loading import load_model
from engine.net.ports import free_port
from engine.overrides import apply_overrides
from engine.policy import Policy
from engine.presets import PRESETS
from engine.recipe import ModelConfig
from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.latents import LatentLayout
from engine.rollout.protocol import pack
from engine.rollout.server import RolloutService, make_server
from engine.rollout.sglang import RolloutServerError, SGLangBackend
from engine.rollout.weights import save_weights
from engine.run.loop import SYNC_DIR, run
from engine.run.ranks import train


def _requests(count: int) -> list[RolloutRequest]:
    return [
        RolloutRequest(
            f"prompt {g}",
            seeds=(100 + 2 * g, 101 + 2 * g),
            height=32,
            width=32,
            num_inference_steps=4,
            sde_step_indices=(0, 1),
            group_index=g,
        )
        for g in range(count)
    ]


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/server_stats", timeout=30) as answer:
        return json.loads(answer.read())


def _assert_same(remote, local) -> None:
    assert remote.request is local.request or remote.request == local.request
    assert np.array_equal(remote.images, local.images)
    torch.testing.assert_close(remote.log_probs, local.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(remote.latents, local.latents, rtol=0, atol=1e-5)


def test_generate_many_gives_the_in_process_samples_each_with_its_request(server_url, tiny_model):
    requests = _requests(3)
    results = list(SGLangBackend([server_url], server_concurrency=2).generate_many(requests))
    assert sorted(id(r.request) for r in results) == sorted(id(r) for r in requests)
    local = InProcessBackend(tiny_model)
    for result in results:
        _assert_same(result, local.generate(result.request))


def test_the_concurrency_limit_holds_on_the_server(server_url):
    urllib.request.urlopen(urllib.request.Request(server_url + "/server_stats/reset", b""))
    backend = SGLangBackend([server_url], server_concurrency=2)
    results = list(backend.generate_many(_requests(6)))
    stats = _stats(server_url)
    assert len(results) == 6 and stats["answered"] == 6
    # The client never sends more than the limit; six requests keep both slots busy.
    assert stats["max_in_flight"] == 2


def test_a_server_killed_mid_rollout_hands_its_requests_to_the_other(
    start_server, server_url, tiny_model
):
    victim, process = start_server()
    backend = SGLangBackend([victim, server_url], server_concurrency=2, backoff=0.01)
    requests = _requests(6)
    results = []
    for result in backend.generate_many(requests):
        if not results:
            process.kill()  # both servers hold requests now: the victim's are cut off
            process.wait()
        results.append(result)
    assert sorted(id(r.request) for r in results) == sorted(id(r) for r in requests)
    assert backend.retries >= 1 and not backend.servers[0].alive
    local = InProcessBackend(tiny_model)
    for result in results:
        _assert_same(result, local.generate(result.request))


def test_an_unreachable_url_at_start_up_is_named(server_url):
    dead = f"http://127.0.0.1:{free_port()}"
    backend = SGLangBackend([server_url, dead])
    with pytest.raises(RolloutServerError, match=f"unreachable: {dead} "):
        backend.check_servers()


@pytest.fixture
def stub() -> Iterator[tuple[str, dict]]:
    """An HTTP server answering /rollout/generate with whatever ``reply`` holds."""
    reply: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(reply["status"])
            self.send_header("Content-Length", str(len(reply["body"])))
            self.end_headers()
            self.wfile.write(reply["body"])

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", reply
    server.shutdown()
    server.server_close()


def test_a_malformed_answer_names_server_request_and_field(stub):
    url, reply = stub
    reply.update(status=200, body=pack([{"generated_output": None}, {}]))
    with pytest.raises(RolloutServerError) as caught:
        SGLangBackend([url]).generate(_requests(2)[1])
    message = str(caught.value)
    assert url in message and "group 1 prompt 'prompt 1'" in message
    assert "output[0].generated_output must be an encoded tensor" in message


def test_a_4xx_is_permanent_and_a_5xx_is_retried_then_reported(stub):
    url, reply = stub
    reply.update(status=400, body=b'{"detail": "Invalid sampling params: bad"}')
    backend = SGLangBackend([url], max_retries=2, backoff=0.001)
    with pytest.raises(RolloutServerError, match="HTTP 400 on /rollout/generate: Invalid sampl"):
        backend.generate(_requests(1)[0])
    assert backend.retries == 0
    reply.update(status=503, body=b'{"detail": "busy"}')
    with pytest.raises(RolloutServerError, match="failed 3 times, last: HTTP 503"):
        backend.generate(_requests(1)[0])
    assert backend.retries == 2


@pytest.mark.parametrize("target", ["attn", "full"])
def test_weight_sync_gives_the_server_the_trainers_model(
    start_server, scratch_server_url, tmp_path, target
):
    # Adapters stay loaded on a server, so the LoRA case gets a server of its own.
    url = start_server()[0] if target == "attn" else scratch_server_url
    model = load_model("tiny", None)
    policy = Policy(model, ModelConfig(lora_target=target), keep_reference=False, seed=3)
    with torch.no_grad():
        for parameter in policy.parameters:  # as an update would: LoRA B starts at zero
            parameter.add_(
                torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.05
            )
    request = _requests(1)[0]
    backend = SGLangBackend([url])
    before = backend.generate(request)
    saved = save_weights(policy, tmp_path / "sync")
    assert saved.kind == ("full" if target == "full" else "lora")
    assert backend.sync_weights(saved) > 0
    after = backend.generate(request)
    trainer = InProcessBackend(model).generate(request)
    assert not np.array_equal(before.images, trainer.images)
    _assert_same(after, trainer)


@pytest.fixture
def bf16_server_url() -> Iterator[str]:
    """A compatible server on a thread of this process, serving the tiny model in bf16."""
    service = RolloutService(load_model("tiny", None, dtype=torch.bfloat16), "tiny", "tiny")
    server = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("target", ["attn", "full"])
def test_bf16_weight_sync_gives_the_server_the_trainers_samples(bf16_server_url, tmp_path, target):
    # The trainer keeps float32 master weights; the server holds them rounded to bf16, which is
    # what the trainer's autocast computes with: the same samples, bit for bit, and the
    # checksum the sync verifies is over the bf16 weights.
    model = load_model("tiny", None, dtype=torch.bfloat16)
    policy = Policy(model, ModelConfig(lora_target=target), keep_reference=False, seed=3)
    with torch.no_grad():
        for parameter in policy.parameters:
            parameter.add_(
                torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.05
            )
    # Trajectories arrive in float32, as sglang sends them; the layout puts them in the
    # trainer's bf16 (exactly: they were bf16 values).
    backend = SGLangBackend([bf16_server_url], dtype="bfloat16", latents=LatentLayout.of(model))
    backend.check_servers()
    saved = save_weights(policy, tmp_path / "sync")
    assert {t.dtype for t in _synced(saved.path).values()} == {torch.bfloat16}
    backend.sync_weights(saved)
    request = _requests(1)[0]
    after, trainer = backend.generate(request), InProcessBackend(model).generate(request)
    assert after.latents.dtype == torch.bfloat16
    assert np.array_equal(after.images, trainer.images)
    assert torch.equal(after.log_probs, trainer.log_probs)
    assert torch.equal(after.latents, trainer.latents)


def test_a_run_refuses_servers_in_another_dtype_before_the_model_loads(server_url, tmp_path):
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            "model.dtype": "bfloat16",
            "rollout.backend": "sglang",
            "rollout.server_urls": [server_url],
        },
    )
    seen: list = []
    ended = run(recipe, seen.append, out_dir=tmp_path)
    assert ended.status == "failed"
    assert f"{server_url} in float32: restart them with --dtype bfloat16" in (ended.error or "")
    assert not any(isinstance(e, events.RunStarted) for e in seen)


def test_a_short_run_trains_through_the_server_and_reports_weight_sync(
    scratch_server_url, tmp_path
):
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            "rollout_batch_size": 2,
            "n_samples_per_prompt": 2,
            "diffusion_microgroup_size": 1,
            "micro_batch_size_sample": 4,
            "num_inference_steps": 4,
            "eval_num_inference_steps": 2,
            "max_steps": 1,
            "checkpoint_every": 0,
            "rollout.backend": "sglang",
            "rollout.server_urls": [scratch_server_url],
            "rollout.server_concurrency": 2,
        },
    )
    seen: list = []
    ended = run(recipe, seen.append, out_dir=tmp_path)
    assert ended.status == "finished", ended.error
    (throughput,) = [e for e in seen if isinstance(e, events.Throughput)]
    assert throughput.weight_sync_seconds > 0
    (rollout,) = [e for e in seen if isinstance(e, events.RolloutFinished)]
    # Answers arrive in any order; the event keeps groups and samples in seed order.
    assert [[s.seed for s in g.samples] for g in rollout.groups] == [
        list(layout(recipe, 0).group_seeds(g)) for g in range(recipe.layout.rollout_batch_size)
    ]


@pytest.mark.parametrize("target", ["full", "attn"])
def test_fsdp_ranks_sync_the_weights_one_process_would(start_server, tmp_path, target):
    # Two rollouts through a fresh server each: one process, and two gloo ranks sharding the
    # transformer. The second rollout is generated with the weights synced after the first
    # update, gathered whole from the shards (the server checks their checksum too).
    changes = {
        "rollout_batch_size": 2,
        "n_samples_per_prompt": 2,
        "diffusion_microgroup_size": 1,
        "micro_batch_size_sample": 1,
        "num_inference_steps": 4,
        "eval_num_inference_steps": 2,
        "max_steps": 2,
        "eval_every": 0,
        "checkpoint_every": 0,
        "lora_target": target,
        "rollout.backend": "sglang",
        "rollout.server_concurrency": 2,
    }
    rewards = {}
    for gpus in (1, 2):
        recipe = apply_overrides(
            PRESETS["tiny-color"].recipe,
            {**changes, "num_gpus": gpus, "rollout.server_urls": [start_server()[0]]},
        )
        seen: list = []
        ended = train(recipe, seen.append, out_dir=tmp_path / str(gpus))
        assert ended.status == "finished", ended.error
        assert all(e.weight_sync_seconds > 0 for e in seen if isinstance(e, events.Throughput))
        rewards[gpus] = [
            [s.reward for g in e.groups for s in g.samples]
            for e in seen
            if isinstance(e, events.RolloutFinished)
        ]
    assert len(rewards[2]) == 2
    # The first rollout comes from the base weights, the second from the synced ones: both match
    # one process's (the updates differ by fp32 rounding only).
    for mine, reference in zip(rewards[2], rewards[1], strict=True):
        assert mine == pytest.approx(reference, rel=1e-4, abs=1e-6)
    # The last files sent are whole tensors, one process's within rounding, and trained.
    base = Policy(load_model("tiny", None), ModelConfig(lora_target=target), keep_reference=False,
                  seed=recipe.run.seed)  # fmt: skip
    start = _synced(save_weights(base, tmp_path / "base").path)
    one, two = _synced(tmp_path / "1" / SYNC_DIR), _synced(tmp_path / "2" / SYNC_DIR)
    assert one.keys() == two.keys() == start.keys() and one
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=1e-6, rtol=1e-5)
    assert max((value - start[name]).abs().max().item() for name, value in one.items()) > 1e-4


def _synced(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the weight files in ``folder``."""
    return {
        name: value
        for path in sorted(folder.rglob("*.safetensors"))
        for name, value in load_file(path).items()
    }


def test_an_unreachable_server_fails_the_run_before_the_model_loads(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe, {"rollout.backend": "sglang", "rollout.server_urls": [dead]}
    )
    seen: list = []
    ended = run(recipe, seen.append, out_dir=tmp_path)
    assert ended.status == "failed" and dead in (ended.error or "")
    assert not any(isinstance(e, events.RunStarted) for e in seen)
