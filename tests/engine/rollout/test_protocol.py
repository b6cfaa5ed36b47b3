"""The wire format: requests and results round-trip exactly; malformed payloads name the field."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest
import torch

from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.protocol import (
    ProtocolError,
    decode_tensor,
    encode_tensor,
    pack,
    parse_request,
    parse_result,
    request_payload,
    result_payload,
    unpack,
)

REQUEST = RolloutRequest(
    "a red image",
    seeds=(2**31 - 1, 0),  # wraps at 2^31: not seed + i, so the list must travel
    height=32,
    width=32,
    num_inference_steps=6,
    sde_step_indices=(1, 2),
    sde_type="cps",
    noise_level=0.5,
    group_index=3,
)


@pytest.fixture(scope="module")
def result(tiny_model):
    return InProcessBackend(tiny_model).generate(REQUEST)


def test_request_round_trips_except_the_group_the_client_keeps():
    payload = unpack(pack(request_payload(REQUEST)))
    assert payload["seed"] == 2**31 - 1 and payload["num_outputs_per_prompt"] == 2
    assert parse_request(payload) == dataclasses.replace(REQUEST, group_index=0)


def test_an_ode_request_is_sent_as_sglang_ode_and_comes_back_unchanged():
    ode = RolloutRequest("x", seeds=(5,), height=32, width=32, num_inference_steps=4, noise_level=0)
    payload = request_payload(ode)
    assert payload["rollout_sde_type"] == "ode" and payload["rollout_sde_step_indices"] == []
    assert parse_request(payload) == ode


def test_without_a_seed_list_output_i_gets_seed_plus_i():
    payload = request_payload(REQUEST)
    del payload["extra_sampling_params"]
    payload["seed"] = 40
    assert parse_request(payload).seeds == (40, 41)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": None}, "prompt is missing"),
        ({"height": "32"}, "height must be int, not str"),
        ({"num_outputs_per_prompt": 0}, "num_outputs_per_prompt=0 must be at least 1"),
        ({"extra_sampling_params": {"seed": [1, 2, 3]}}, "3 seeds for num_outputs_per_prompt=2"),
        ({"rollout_sde_type": "euler"}, "rollout_sde_type='euler' is unknown"),
        ({"rollout_sde_step_indices": [1, 3]}, "must be consecutive steps"),
    ],
)
def test_a_malformed_request_names_its_field(change, message):
    payload = {**request_payload(REQUEST), **change}
    with pytest.raises(ProtocolError, match=message):
        parse_request(payload)


def test_tensors_round_trip_bitwise_from_bytes_and_from_base64():
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    encoded = encode_tensor(tensor)
    assert encoded["shape"] == [2, 3] and encoded["dtype"] == "torch.float32"
    assert torch.equal(decode_tensor(encoded, "x"), tensor)
    older = {**encoded, "data": base64.b64encode(encoded["data"]).decode()}
    assert torch.equal(decode_tensor(older, "x"), tensor)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "not base64!"}, r"x.data is not valid base64"),
        ({"data": b"garbage"}, r"x.data is not a safetensors blob"),
        ({"shape": [3, 2]}, r"x: data has shape \[2, 3\], shape says \[3, 2\]"),
        ({"dtype": "torch.float16"}, r"data has dtype torch.float32, dtype says torch.float16"),
        ({"__tensor__": False}, r"x must be an encoded tensor"),
    ],
)
def test_a_bad_tensor_names_the_field(change, message):
    encoded = {**encode_tensor(torch.zeros(2, 3)), **change}
    with pytest.raises(ProtocolError, match=message):
        decode_tensor(encoded, "x")


def test_a_result_round_trips_exactly(result):
    back = parse_result(unpack(pack(result_payload(result, "id"))), REQUEST)
    assert back.request is REQUEST
    assert np.array_equal(back.images, result.images)
    assert torch.equal(back.log_probs, result.log_probs)
    assert torch.equal(back.latents, result.latents)
    assert torch.equal(back.schedule, result.schedule)
    assert torch.equal(back.samples[1].sigmas, result.schedule[1:4])
    assert back.timings == result.timings and back.dit_forwards == result.dit_forwards


def test_per_step_answers_for_every_step_are_cut_to_the_window(result):
    payload = result_payload(result, "id")
    everything = torch.arange(6, dtype=torch.float32)  # one log-prob per step, N = 6
    payload[0]["rollout_log_probs"] = encode_tensor(everything)
    back = parse_result(payload, REQUEST)
    assert back.samples[0].log_probs.tolist() == [1.0, 2.0]


def test_a_float_planar_image_is_scaled_as_diffusers_does(result):
    payload = result_payload(result, "id")
    planar = torch.zeros(3, 32, 32)
    planar[0], planar[1], planar[2] = 1.0, 0.2, 1.5  # 1.5 clamps to 1
    payload[0]["generated_output"] = encode_tensor(planar)
    pixel = parse_result(payload, REQUEST).images[0, 5, 7]
    assert pixel.tolist() == [255, 51, 255]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p[:1], "1 outputs for num_outputs_per_prompt=2"),
        (lambda p: {"detail": "x"}, "must be a list of outputs, not dict"),
        (lambda p: [p[0], {**p[1], "dit_trajectory": None}], r"output\[1\].dit_trajectory is"),
        (
            lambda p: [{**p[0], "rollout_log_probs": encode_tensor(torch.zeros(4))}, p[1]],
            r"output\[0\].rollout_log_probs has shape \[4\]",
        ),
        (
            lambda p: [{**p[0], "generated_output": encode_tensor(torch.zeros(16, 16, 3))}, p[1]],
            r"output\[0\].generated_output has shape \[16, 16, 3\]",
        ),
    ],
)
def test_a_malformed_answer_names_the_output_and_field(result, corrupt, message):
    with pytest.raises(ProtocolError, match=message):
        parse_result(corrupt(result_payload(result, "id")), REQUEST)


def test_garbage_is_not_msgpack():
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        unpack(b"\xc1")
