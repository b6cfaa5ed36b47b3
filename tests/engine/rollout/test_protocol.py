"""The wire format: requests and results round-trip exactly; malformed payloads name the field."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest
import torch

from engine.models.packing import pack_2x2
from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.latents import LatentLayout
from engine.rollout.protocol import (
    ProtocolError,
    WorkerRefusal,
    decode_tensor,
    encode_tensor,
    pack,
    parse_request,
    parse_result,
    request_payload,
    result_payload,
    unpack,
)
from engine.rollout.server import RolloutService

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


SIZES = {"height": 32, "width": 32, "steps": 50}


def _answer(model, request: RolloutRequest) -> list:
    """The compatible server's answer to ``request``, as it would send it."""
    wire = parse_request(request_payload(request), **SIZES)
    return result_payload(wire, RolloutService(model, "tiny", "tiny").sample(wire), "id")


@pytest.fixture(scope="module")
def result(tiny_model):
    return InProcessBackend(tiny_model).generate(REQUEST)


@pytest.fixture(scope="module")
def answer(tiny_model):
    return _answer(tiny_model, REQUEST)


def test_a_training_request_asks_for_the_chain_and_the_log_prob_its_sampler_computes():
    payload = unpack(pack(request_payload(REQUEST)))
    assert payload["seed"] == 2**31 - 1 and payload["num_outputs_per_prompt"] == 2
    assert payload["extra_sampling_params"] == {"seed": [2**31 - 1, 0]}
    assert payload["rollout"] is True and payload["rollout_return_dit_trajectory"] is True
    # The window is steps 1 and 2: their input latents x_1, x_2 and the output x_3 of step 2,
    # which sglang records as the input of step 3.
    assert payload["rollout_sde_step_indices"] == [1, 2]
    assert payload["rollout_return_step_indices"] == [1, 2, 3]
    assert payload["rollout_log_prob_no_const"] is True  # cps
    sde = request_payload(dataclasses.replace(REQUEST, sde_type="sde"))
    assert sde["rollout_log_prob_no_const"] is False


def test_an_evaluation_request_asks_for_images_only():
    ode = RolloutRequest("x", seeds=(5,), height=32, width=32, num_inference_steps=4, noise_level=0)
    payload = request_payload(ode)
    assert payload["rollout"] is False
    assert not [key for key in payload if key.startswith("rollout_")]
    assert parse_request(payload, **SIZES).request == dataclasses.replace(ode, noise_level=0.7)


def test_the_server_side_reads_back_the_request_but_the_group_the_client_keeps():
    wire = parse_request(request_payload(REQUEST), **SIZES)
    assert wire.request == dataclasses.replace(REQUEST, group_index=0)
    assert (wire.seed, wire.rollout, wire.no_const) == (2**31 - 1, True, True)
    assert wire.return_trajectory and wire.return_steps == (1, 2, 3)


def test_absent_fields_take_sglangs_defaults():
    wire = parse_request({"prompt": "x"}, **SIZES)
    # sglang: seed 42, one output, rollout on, sde at noise 0.7, the true log-density, no
    # trajectory, and no step list: every step stochastic, every latent recorded.
    assert wire.request.seeds == (42,) and wire.seed is None
    assert (wire.request.height, wire.request.num_inference_steps) == (32, 50)
    assert wire.request.sde_step_indices == tuple(range(50))
    assert (wire.request.sde_type, wire.request.noise_level) == ("sde", 0.7)
    assert (wire.rollout, wire.no_const, wire.return_trajectory) == (True, False, False)
    assert wire.return_steps is None


def test_an_empty_step_list_makes_every_step_an_ode_step():
    wire = parse_request({"prompt": "x", "rollout_sde_step_indices": []}, **SIZES)
    assert wire.request.sde_step_indices == () and wire.rollout


def test_without_a_seed_list_output_i_gets_seed_plus_i():
    payload = request_payload(REQUEST)
    del payload["extra_sampling_params"]
    payload["seed"] = 40
    assert parse_request(payload, **SIZES).request.seeds == (40, 41)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"prompt": None}, ProtocolError, "prompt is missing"),
        ({"height": "32"}, ProtocolError, "height must be int, not str"),
        ({"rollout_sde_step_indices": "1"}, ProtocolError, "must be a list of step indices"),
        ({"num_outputs_per_prompt": 0}, ValueError, "num_outputs_per_prompt must be a positive"),
        ({"extra_sampling_params": {"seed": [1, 2, 3]}}, WorkerRefusal, "must match num_outp"),
        ({"extra_sampling_params": {"seed": [-1, 2]}}, ValueError, r"seeds=\[-1, 2\] must be"),
        ({"rollout_sde_type": "euler"}, ValueError, "Unsupported sde_type: euler"),
        ({"rollout_sde_step_indices": [1, 3]}, ValueError, "must be consecutive steps"),
    ],
)
def test_a_malformed_request_names_its_field(change, error, message):
    payload = {**request_payload(REQUEST), **change}
    with pytest.raises(error, match=message):
        parse_request(payload, **SIZES)


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


def test_a_result_round_trips_exactly(result, answer):
    back = parse_result(unpack(pack(answer)), REQUEST)
    assert back.request is REQUEST
    assert np.array_equal(back.images, result.images)
    assert torch.equal(back.log_probs, result.log_probs)
    assert torch.equal(back.latents, result.latents)
    assert torch.equal(back.schedule, result.schedule)
    assert torch.equal(back.samples[1].sigmas, result.schedule[1:4])
    assert back.dit_forwards == result.dit_forwards


def test_the_answer_is_shaped_as_sglang_shapes_it(answer, result):
    entry = answer[1]
    assert entry["seed"] == 2**31 - 1  # the first seed, repeated in every output
    image = decode_tensor(entry["generated_output"], "x")
    assert image.shape == (3, 1, 32, 32) and image.dtype == torch.float32
    log_probs = decode_tensor(entry["rollout_log_probs"], "x")
    assert log_probs.shape == (6,) and log_probs[[0, 3, 4, 5]].tolist() == [0.0] * 4
    trajectory = entry["dit_trajectory"]
    assert decode_tensor(trajectory["latents"], "x").shape == (3, 3, 32, 32)
    # Scheduler timesteps, t x 1000, of the recorded latents x_1, x_2, x_3.
    times = decode_tensor(trajectory["timesteps"], "x")
    assert torch.equal(times, result.schedule[1:4] * 1000)


def test_an_images_only_answer_is_an_evaluation_result(tiny_model):
    request = dataclasses.replace(REQUEST, sde_step_indices=())
    answer = _answer(tiny_model, request)
    assert answer[0]["dit_trajectory"] is None and answer[0]["rollout_log_probs"] is None
    back = parse_result(answer, request)
    local = InProcessBackend(tiny_model).generate(request)
    assert np.array_equal(back.images, local.images)
    assert back.log_probs.shape == (2, 0) and back.samples[0].latents.shape == (0,)


def test_packed_latents_are_unpacked_to_the_trainers_layout_and_dtype(result, answer):
    layout = LatentLayout(lambda h, w: (3, h, w), torch.float64, "cpu")
    packed = [dict(entry, dit_trajectory=dict(entry["dit_trajectory"])) for entry in answer]
    for entry, sample in zip(packed, result.samples, strict=True):
        entry["dit_trajectory"]["latents"] = encode_tensor(pack_2x2(sample.latents))
    assert decode_tensor(packed[0]["dit_trajectory"]["latents"], "x").shape == (3, 256, 12)
    back = parse_result(packed, REQUEST, layout)
    assert back.latents.dtype == torch.float64
    assert torch.equal(back.latents, result.latents.double())
    wrong = LatentLayout(lambda h, w: (4, h, w))
    with pytest.raises(
        ProtocolError,
        match=r"latents has shape \[3, 256, 12\]: expected "
        r"\[3, 4, 32, 32\] or packed \[3, 256, 16\]",
    ):
        parse_result(packed, REQUEST, wrong)


def test_per_step_answers_for_every_step_are_cut_to_the_window(answer):
    payload = [dict(entry) for entry in answer]
    everything = torch.arange(6, dtype=torch.float32)  # one log-prob per step, N = 6
    payload[0]["rollout_log_probs"] = encode_tensor(everything)
    back = parse_result(payload, REQUEST)
    assert back.samples[0].log_probs.tolist() == [1.0, 2.0]


def test_a_float_planar_image_is_scaled_as_diffusers_does(answer):
    payload = [dict(entry) for entry in answer]
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
def test_a_malformed_answer_names_the_output_and_field(answer, corrupt, message):
    with pytest.raises(ProtocolError, match=message):
        parse_result(corrupt(answer), REQUEST)


def test_garbage_is_not_msgpack():
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        unpack(b"\xc1")
