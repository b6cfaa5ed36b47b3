"""The project's unchanged client against sglang 0.5.23's own code (``harness``): training
windows plain and packed, evaluation, ``sde`` and ``cps`` replay, weight syncs that take effect,
warm-up 503s, a server killed mid-rollout, memory released and resumed."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import threading

import numpy as np
import pytest
import torch
import torch.multiprocessing

from engine import events
from engine.models.loading import load_model
from engine.models.packing import unpack_2x2
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.rollout import InProcessBackend, RolloutRequest
from engine.rollout.in_process import encode_request
from engine.rollout.latents import LatentLayout
from engine.rollout.launch import SERVER_COMMAND_SETTING
from engine.rollout.sglang import RolloutServerError, SGLangBackend
from engine.rollout.steps import stochastic_step
from engine.rollout.tensor_sync import tensor_update_request
from engine.rollout.weights import save_weights, sync_folder, weights_checksum
from engine.run.loop import SYNC_DIR, run
from tests.sglang_d.adapters import trained_lora
from tests.sglang_d.test_conformance import _generate, _post, _tensor
from tests.waiting import wait_until

#: The trainer's replay of a step against the server's log-prob, max |ratio - 1|. Both run the
#: same float32 DiT on the same latents; the server's log-prob uses the noise it drew, the
#: replay x' - mean of the stored x', which agree to float32 rounding (measured: 0).
REPLAY_TOLERANCE = 1e-5

WINDOW = RolloutRequest(
    "a red image",
    seeds=(21, 22),
    height=32,
    width=32,
    num_inference_steps=6,
    sde_step_indices=(2, 3),
    noise_level=0.7,
)


def _client(url: str, model=None, **options) -> SGLangBackend:
    layout = None if model is None else LatentLayout.of(model)
    return SGLangBackend([url], latents=layout, **options)


def _replay(model, result) -> float:
    """max |exp(recomputed - server) - 1| over the window, the loop's replay check."""
    request = result.request
    conditioning = encode_request(model, request)
    worst = 0.0
    for k, index in enumerate(request.sde_step_indices):
        step = stochastic_step(model, result.latents[:, k], result.schedule, index, conditioning,
                               request, prev_sample=result.latents[:, k + 1])  # fmt: skip
        ratio = torch.exp(step.log_prob - result.log_probs[:, k].to(step.log_prob.device))
        worst = max(worst, (ratio - 1).abs().max().item())
    return worst


def test_a_window_comes_back_as_the_true_chain_x_k_to_x_k_plus_t(sglang_url, tiny_model):
    result = _client(sglang_url, tiny_model).generate(WINDOW)
    assert result.latents.shape == (2, 3, 3, 32, 32) and result.log_probs.shape == (2, 2)
    # The true chain: every latent the server's loop went through, for the same seeds.
    every = _generate(sglang_url, seed=21, num_inference_steps=6, rollout_sde_step_indices=[2, 3],
                      rollout_return_dit_trajectory=True)  # fmt: skip
    for row, entry in enumerate(every):
        chain = _tensor(entry["dit_trajectory"]["latents"])  # x_0 .. x_6
        assert torch.equal(result.latents[row], chain[2:5])
    assert torch.equal(result.samples[0].sigmas, result.schedule[2:5])


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_the_trainers_replay_reproduces_the_servers_log_probs(sglang_url, tiny_model, sde_type):
    request = dataclasses.replace(WINDOW, sde_type=sde_type, noise_level=0.5)
    result = _client(sglang_url, tiny_model).generate(request)
    assert torch.isfinite(result.log_probs).all()
    assert _replay(tiny_model, result) <= REPLAY_TOLERANCE


def test_the_last_step_in_the_window_replays_too(sglang_url, tiny_model):
    request = dataclasses.replace(WINDOW, sde_step_indices=(4, 5))  # x_6 is the final latent
    result = _client(sglang_url, tiny_model).generate(request)
    assert _replay(tiny_model, result) <= REPLAY_TOLERANCE


def test_packed_latents_arrive_unpacked_in_the_trainers_dtype(packed_url, tiny_model):
    wide = LatentLayout(tiny_model.latent_shape, torch.float64, "cpu")
    result = SGLangBackend([packed_url], latents=wide).generate(WINDOW)
    assert result.latents.shape == (2, 3, 3, 32, 32) and result.latents.dtype == torch.float64
    # The true chain as the server keeps it: packed [7, 256, 12], unpacked by hand here.
    every = _generate(packed_url, seed=21, num_inference_steps=6, rollout_sde_step_indices=[2, 3],
                      rollout_return_dit_trajectory=True)  # fmt: skip
    for row, entry in enumerate(every):
        chain = _tensor(entry["dit_trajectory"]["latents"])
        assert chain.shape == (7, 256, 12)
        assert torch.equal(result.latents[row], unpack_2x2(chain[2:5], 32, 32).double())
    # The trainer's DiT takes them as they came: its replay matches the server's log-probs.
    as_trained = SGLangBackend([packed_url], latents=LatentLayout.of(tiny_model)).generate(WINDOW)
    assert _replay(tiny_model, as_trained) <= REPLAY_TOLERANCE
    without = SGLangBackend([packed_url]).generate(WINDOW)
    assert without.latents.shape == (2, 3, 256, 12)  # no layout: as sent


def test_packed_latents_that_fit_no_layout_are_refused(packed_url):
    layout = LatentLayout(lambda h, w: (4, h, w))
    with pytest.raises(RolloutServerError, match=r"latents has shape \[3, 256, 12\]"):
        SGLangBackend([packed_url], latents=layout).generate(WINDOW)


def test_evaluation_gets_the_ode_images(sglang_url, tiny_model):
    request = dataclasses.replace(WINDOW, sde_step_indices=(), noise_level=0.0)
    remote = _client(sglang_url, tiny_model).generate(request)
    local = InProcessBackend(tiny_model).generate(request)
    # The ODE from the same first draw of the same seeds: the same images.
    assert np.array_equal(remote.images, local.images)
    assert remote.log_probs.shape == (2, 0)


def test_two_successive_lora_syncs_both_take_effect(start, tmp_path):
    url = start("sglang")[0]  # adapters stay loaded: a server of its own
    backend = SGLangBackend([url])
    ode = dataclasses.replace(WINDOW, sde_step_indices=(), noise_level=0.0)
    before = backend.generate(ode)
    for step, seed in enumerate((1, 2)):
        policy = trained_lora(seed)
        backend.sync_weights(save_weights(policy, sync_folder(tmp_path, step)))
        after = backend.generate(ode)
        # The server samples with the adapter just synced: the trainer's own ODE images.
        np.testing.assert_array_equal(
            after.images, InProcessBackend(policy.model).generate(ode).images
        )
        assert not np.array_equal(after.images, before.images)
        before = after


def test_a_sync_from_a_reused_folder_is_caught_as_stale(start, tmp_path):
    url = start("sglang")[0]
    backend = SGLangBackend([url])
    backend.sync_weights(save_weights(trained_lora(1), tmp_path / "same"))
    # sglang skips a nickname and path it loaded before: the second adapter never loads.
    with pytest.raises(RolloutServerError, match="the load did not take"):
        backend.sync_weights(save_weights(trained_lora(2), tmp_path / "same"))


def test_a_warming_up_server_is_waited_on_within_the_startup_timeout(start, tmp_path):
    warmup = tmp_path / "warm"
    url = start("sglang", "--warmup-file", str(warmup))[0]
    with pytest.raises(RolloutServerError, match="HTTP 503 on /health"):
        SGLangBackend([url]).check_servers(startup_timeout=0)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            SGLangBackend([url]).check_servers(startup_timeout=120)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    asked = warmup.with_suffix(".asked")
    asked.unlink()
    waiting = threading.Thread(target=check)
    waiting.start()
    # Answered 503 at least once more while warming up.
    wait_until(asked.exists, what="a health check")
    warmup.touch()
    waiting.join(120)
    assert outcome == [None]


def test_a_server_killed_mid_rollout_hands_its_requests_to_the_other(start, tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    doomed, process = start("sglang", "--hold-dir", str(held))
    survivor = start("sglang")[0]
    backend = SGLangBackend([doomed, survivor], server_concurrency=1)
    requests = [dataclasses.replace(WINDOW, group_index=g, seeds=(30 + g,)) for g in range(3)]
    results: list = []
    running = threading.Thread(target=lambda: results.extend(backend.generate_many(requests)))
    running.start()
    # A request is inside the doomed server's loop.
    wait_until((held / "started").exists, what="a request to start")
    process.kill()
    running.join(300)
    assert sorted(r.request.group_index for r in results) == [0, 1, 2]
    assert [s.alive for s in backend.servers] == [False, True]


def test_memory_released_then_resumed_generates_again(sglang_url):
    backend = SGLangBackend([sglang_url], max_retries=0)
    assert backend.release_memory() >= 0
    try:
        with pytest.raises(RolloutServerError, match="Server is sleeping"):
            backend.generate(WINDOW)
    finally:
        backend.resume_memory()
    assert backend.generate(WINDOW).log_probs.shape == (2, 2)


def test_a_colocated_run_releases_the_servers_memory_around_each_update(tmp_path, monkeypatch):
    # sglang's code as the colocated server: the worker starts it, frees its memory for each
    # update, resumes it, then syncs (every sync must take, or the checksum check fails).
    command = f"{shlex.quote(sys.executable)} -m tests.sglang_d.harness.server"
    monkeypatch.setenv(SERVER_COMMAND_SETTING, command)
    recipe = apply_overrides(
        PRESETS["tiny-color"].recipe,
        {
            "rollout_batch_size": 2,
            "n_samples_per_prompt": 2,
            "diffusion_microgroup_size": 2,
            "micro_batch_size_sample": 4,
            "num_inference_steps": 4,
            "eval_num_inference_steps": 2,
            "max_steps": 2,
            "checkpoint_every": 0,
            "rollout.backend": "sglang",
            "rollout.launch": "colocated",
            "rollout.startup_timeout": 300,
        },
    )
    seen: list = []
    ended = run(recipe, seen.append, out_dir=tmp_path)
    assert ended.status == "finished", ended.error
    throughputs = [e for e in seen if isinstance(e, events.Throughput)]
    assert len(throughputs) == 2
    assert all(t.memory_seconds > 0 and t.weight_sync_seconds > 0 for t in throughputs)
    # One sync folder left: the servers' current weights.
    assert len(list((tmp_path / SYNC_DIR).glob("step-*"))) == 1


def test_a_tensor_update_is_read_as_sglangs_worker_reads_it(start, tiny_model):
    # On a GPU the tensors travel as CUDA IPC handles (bench/gpu_sglang.sh sends them); here
    # as shared-memory files, through sglang's route, payload selection and SafeUnpickler.
    url = start("sglang")[0]
    changed = {name: value + 0.25 for name, value in tiny_model.transformer.state_dict().items()}
    strategy = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        wrong = tensor_update_request(changed.items(), "GPU-elsewhere")
        status, answer = _post(url, "/update_weights_from_tensor", wrong)
        assert status == 400 and "no payload was exported from this worker's GPU" in answer[
            "message"]  # fmt: skip
        body = tensor_update_request(changed.items(), "GPU-00000000-harn-ess0-0000-000000000000")
        status, answer = _post(url, "/update_weights_from_tensor", body)
    finally:
        torch.multiprocessing.set_sharing_strategy(strategy)
    assert status == 200 and answer["success"], answer
    model = load_model("tiny", None)
    model.transformer.load_state_dict(changed)
    # sglang's compute_weights_checksum on the server equals ours on the same weights.
    status, answer = _post(url, "/get_weights_checksum", {"module_names": ["transformer"]})
    assert answer == {"transformer": weights_checksum(model.transformer)}


def test_sglang_draws_a_samples_later_noise_with_the_batchs_shape(sglang_url):
    # A finding about 0.5.23, kept as a test so that a release that changes it is noticed:
    # each output's step noise is drawn with the whole batch's shape
    # (flow_rollout_controller.py lines 209-214), so past the first stochastic step a seed's
    # sample depends on M. The trainer replays the stored chain, so training is unaffected.
    alone = SGLangBackend([sglang_url]).generate(dataclasses.replace(WINDOW, seeds=(21,)))
    paired = SGLangBackend([sglang_url]).generate(WINDOW)
    first, second = (
        (alone.latents[0, k] - paired.latents[0, k]).abs().max().item() for k in (1, 2)
    )
    assert first < 1e-5  # the first stochastic step: batch rounding only (measured 7e-7)
    assert second > 0.1  # the second: other noise (measured 1.4)
