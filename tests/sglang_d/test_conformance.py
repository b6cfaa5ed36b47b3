"""The same HTTP exchanges against sglang 0.5.23's own code and the compatible server: every
field the client uses must mean the same on both (docs/sglang.md's table)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.policy import ADAPTER
from engine.rollout.protocol import decode_tensor, unpack
from engine.rollout.weights import save_weights
from tests.sglang_d.adapters import trained_lora

BASE = {"prompt": "a red image", "height": 32, "width": 32, "num_inference_steps": 4,
        "negative_prompt": "", "seed": 11, "num_outputs_per_prompt": 2}  # fmt: skip


def _post(url: str, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    call = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=120) as answer:
            raw = answer.read()
            kind = answer.headers.get("Content-Type", "")
            return answer.status, unpack(raw) if "msgpack" in kind else json.loads(raw)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:  # Starlette's plain-text 500
            return error.code, raw.decode()


def _generate(url: str, **fields: Any) -> list[dict[str, Any]]:
    status, answer = _post(url, "/rollout/generate", {**BASE, **fields})
    assert status == 200, answer
    return answer


def _tensor(value: Any) -> torch.Tensor:
    return decode_tensor(value, "field")


def test_a_window_records_the_latents_before_each_listed_step_and_the_final_as_step_n(server):
    _, url = server
    answer = _generate(url, rollout_sde_step_indices=[1, 2], rollout_return_step_indices=[1, 2, 3],
                       rollout_return_dit_trajectory=True)  # fmt: skip
    full = _generate(url, rollout_sde_step_indices=[1, 2], rollout_return_dit_trajectory=True)
    for window, every in zip(answer, full, strict=True):
        sigmas = _tensor(window["dit_trajectory"]["sigmas"])
        assert sigmas.shape == (5,) and sigmas[-1] == 0  # N + 1, terminal 0
        chain = _tensor(window["dit_trajectory"]["latents"])
        # No return list records every step's input and the final latents: N + 1 = 5.
        assert _tensor(every["dit_trajectory"]["latents"]).shape[0] == 5
        assert torch.equal(chain, _tensor(every["dit_trajectory"]["latents"])[1:4])
        # The scheduler's timesteps (t x 1000) of x_1, x_2, x_3, not its sigmas.
        assert torch.equal(_tensor(window["dit_trajectory"]["timesteps"]), sigmas[1:4] * 1000)
        log_probs = _tensor(window["rollout_log_probs"])
        assert log_probs.shape == (4,)  # every step: 0 on the ODE steps
        assert log_probs[[0, 3]].tolist() == [0.0, 0.0] and (log_probs[1:3] != 0).all()


def test_every_entry_repeats_the_first_seed_and_sends_a_float_image(server):
    _, url = server
    answer = _generate(url, seed=5, extra_sampling_params={"seed": [5, 9]})
    assert [entry["seed"] for entry in answer] == [5, 5]
    image = _tensor(answer[0]["generated_output"])
    assert image.shape == (3, 1, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    # The seed list, not seed + i, drew output 1: seed 9, not the 6 of a request without it.
    plus_one = _generate(url, seed=5)
    assert torch.equal(image, _tensor(plus_one[0]["generated_output"]))
    assert not torch.equal(_tensor(answer[1]["generated_output"]),
                           _tensor(plus_one[1]["generated_output"]))  # fmt: skip


def test_no_step_list_is_every_step_stochastic_an_empty_one_none(server):
    _, url = server
    every = _tensor(_generate(url)[0]["rollout_log_probs"])
    none = _tensor(_generate(url, rollout_sde_step_indices=[])[0]["rollout_log_probs"])
    assert (every != 0).all() and (none == 0).all()


def test_rollout_false_answers_images_only_and_a_trajectory_only_when_asked(server):
    _, url = server
    (entry, _) = _generate(url, rollout=False, rollout_return_dit_trajectory=True)
    assert entry["rollout_log_probs"] is None and entry["dit_trajectory"] is None
    assert _tensor(entry["generated_output"]).shape == (3, 1, 32, 32)
    (entry, _) = _generate(url, rollout_sde_step_indices=[1])
    assert entry["dit_trajectory"] is None and entry["rollout_log_probs"] is not None


def test_log_prob_no_const_drops_the_gaussians_constants(server):
    _, url = server
    fields = {
        "rollout_sde_type": "cps",
        "rollout_noise_level": 0.5,
        "rollout_sde_step_indices": [1],
    }
    without = _tensor(_generate(url, rollout_log_prob_no_const=True, **fields)[0]
                      ["rollout_log_probs"])[1].item()  # fmt: skip
    full = _tensor(_generate(url, rollout_log_prob_no_const=False, **fields)[0]
                   ["rollout_log_probs"])[1].item()  # fmt: skip
    # Same draw: the no-const value is -mean((x' - mean)^2) = -mean(noise^2) s^2 and the
    # log-density is that / (2 s^2) - log s - log sqrt(2 pi), with cps's std s = t_2 sin(a pi/2).
    sigmas = _tensor(_generate(url, rollout_return_dit_trajectory=True, **fields)[0]
                     ["dit_trajectory"]["sigmas"])  # fmt: skip
    std = sigmas[2].item() * math.sin(0.5 * math.pi / 2)
    expected = without / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    assert full == pytest.approx(expected, rel=1e-5)


def test_absent_fields_take_sglangs_defaults(server):
    _, url = server
    body = {"prompt": "x", "height": 32, "width": 32, "num_inference_steps": 2,
            "rollout_return_dit_trajectory": True, "seed": 3}  # fmt: skip
    status, answer = _post(url, "/rollout/generate", body)
    assert status == 200 and len(answer) == 1 and answer[0]["seed"] == 3
    assert (_tensor(answer[0]["rollout_log_probs"]) != 0).all()  # sde on every step
    assert _tensor(answer[0]["dit_trajectory"]["latents"]).shape[0] == 3
    # Without a seed sglang samples (SamplingParams' 42) but cannot build its answer, whose
    # seed must be an int (rollout_api.py line 258): a 500. The client always sends one.
    del body["seed"]
    assert _post(url, "/rollout/generate", body)[0] == 500


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 422),
        ({"seed": 1}, 422),  # no prompt
        ({**BASE, "num_inference_steps": "four"}, 422),
        ({**BASE, "seed": -1}, 400),  # SamplingParams refuses it
        # Refused by the worker (request_utils.py's normalize_output_seeds): a 500.
        ({**BASE, "extra_sampling_params": {"seed": [1, 2, 3]}}, 500),
    ],
)
def test_a_malformed_body_is_a_422_and_refused_params_a_400_or_500(server, body, status):
    _, url = server
    assert _post(url, "/rollout/generate", body)[0] == status


def test_released_memory_fails_generation_and_full_loads_until_resumed(server):
    _, url = server
    status, answer = _post(url, "/release_memory_occupation", {})
    assert status == 200 and answer["success"] and answer["sleeping"]
    try:
        assert _post(url, "/rollout/generate", BASE)[0] == 500
        assert _post(url, "/update_weights_from_disk", {"model_path": "/nowhere"})[0] == 500
    finally:
        status, answer = _post(url, "/resume_memory_occupation", {})
    assert status == 200 and answer["success"] and not answer["sleeping"]
    assert _post(url, "/rollout/generate", BASE)[0] == 200


def test_set_lora_reloads_only_a_new_path(start, server, tmp_path):
    kind, _ = server
    url = start(kind)[0]  # adapters stay loaded: a server of its own

    def load(folder: Path) -> str:
        body = {"lora_nickname": ADAPTER, "lora_path": str(folder)}
        assert _post(url, "/v1/set_lora", body)[0] == 200
        return _post(url, "/get_weights_checksum", {"module_names": ["transformer"]})[1]

    first = load(save_weights(trained_lora(1), tmp_path / "a").path)
    # Other weights in the same folder: sglang skips a nickname and path it loaded before.
    save_weights(trained_lora(2), tmp_path / "a")
    assert load(tmp_path / "a") == first
    assert load(save_weights(trained_lora(2), tmp_path / "b").path) != first
