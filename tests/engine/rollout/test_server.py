"""The compatible server in a real subprocess: in-process answers over HTTP, clear 4xx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.protocol import pack, parse_result, request_payload, unpack
from engine.rollout.weights import weights_checksum

REQUEST = RolloutRequest(
    "a blue image",
    seeds=(7, 8, 9),
    height=32,
    width=32,
    num_inference_steps=8,
    sde_step_indices=(2, 3),
    noise_level=0.7,
)


def _post(url: str, body: bytes, kind: str = "application/json") -> tuple[int, bytes]:
    call = urllib.request.Request(url, body, {"Content-Type": kind}, method="POST")
    try:
        with urllib.request.urlopen(call, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("kind", ["application/json", "application/msgpack"])
def test_answers_match_the_in_process_backend(server_url, tiny_model, kind):
    payload = request_payload(REQUEST)
    body = json.dumps(payload).encode() if kind == "application/json" else pack(payload)
    status, answer = _post(server_url + "/rollout/generate", body, kind)
    assert status == 200
    remote = parse_result(unpack(answer), REQUEST)
    local = InProcessBackend(tiny_model).generate(REQUEST)
    # Same process-independent computation on the same CPU: equal up to thread scheduling.
    assert np.array_equal(remote.images, local.images)
    torch.testing.assert_close(remote.log_probs, local.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(remote.latents, local.latents, rtol=0, atol=1e-5)
    assert [s.seed for s in remote.samples] == [7, 8, 9]


@pytest.mark.parametrize(
    ("body", "kind", "status", "message"),
    [
        (b'{"seed": 1}', "application/json", 422, "prompt is missing"),
        (b"{not json", "application/json", 422, "the body is not JSON"),
        (b"\xc1", "application/msgpack", 422, "not valid msgpack"),
        (
            json.dumps({**request_payload(REQUEST), "height": 0}).encode(),
            "application/json",
            400,
            "Invalid sampling params: height must be a positive int, got 0",
        ),
    ],
)
def test_a_malformed_request_is_a_4xx_that_says_why(server_url, body, kind, status, message):
    answered, answer = _post(server_url + "/rollout/generate", body, kind)
    assert answered == status
    assert message in json.loads(answer)["detail"]


def test_health_model_info_and_checksum(server_url, tiny_model):
    assert _get(server_url + "/health") == {"status": "ok"}
    info = _get(server_url + "/model_info")
    assert info["server"] == "groupwise" and info["family"] == "tiny"
    # Started without --dtype on a CPU: float32, as an empty model.dtype resolves there.
    assert info["dtype"] == "float32"
    status, answer = _post(server_url + "/get_weights_checksum", b"{}")
    assert status == 200
    assert json.loads(answer) == {"transformer": weights_checksum(tiny_model.transformer)}


def test_unknown_routes_and_missing_weight_paths_are_client_errors(server_url):
    assert _post(server_url + "/nowhere", b"{}")[0] == 404
    status, answer = _post(server_url + "/v1/set_lora", b'{"lora_nickname": "a"}')
    assert status == 400 and json.loads(answer)["detail"] == "lora_path is required"
    status, answer = _post(server_url + "/update_weights_from_disk", b'{"model_path": "/nope"}')
    assert status == 400 and "holds no .safetensors file" in json.loads(answer)["detail"]


def test_released_memory_refuses_generation_until_resumed(server_url):
    generate = json.dumps(request_payload(REQUEST)).encode()
    assert _post(server_url + "/release_memory_occupation", b"")[0] == 200
    try:
        status, answer = _post(server_url + "/rollout/generate", generate)
        # As in sglang: the scheduler's error, answered 500 (the client retries it).
        assert status == 500 and "resume_memory_occupation" in json.loads(answer)["detail"]
    finally:
        assert _post(server_url + "/resume_memory_occupation", b"")[0] == 200
    assert _post(server_url + "/rollout/generate", generate)[0] == 200
