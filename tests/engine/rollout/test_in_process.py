"""The in-process backend on the shipped tiny model: batching, seeds, log-probs, replay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.rollout import (
    InProcessBackend,
    RolloutRequest,
    generate_one_by_one,
    stochastic_step,
)

REQUEST = RolloutRequest(
    "a red image",
    seeds=(11, 12, 13, 14),
    height=32,
    width=32,
    num_inference_steps=8,
    sde_step_indices=(1, 2),
    noise_level=0.7,
)


@pytest.fixture(scope="module")
def batched(tiny_model):
    return InProcessBackend(tiny_model).generate(REQUEST)


def test_result_shapes_and_finite_log_probs(batched):
    assert batched.images.shape == (4, 32, 32, 3) and batched.images.dtype == np.uint8
    assert batched.log_probs.shape == (4, 2) and batched.log_probs.dtype == torch.float32
    assert torch.isfinite(batched.log_probs).all()
    assert batched.latents.shape == (4, 3, 3, 32, 32)
    assert [s.seed for s in batched.samples] == list(REQUEST.seeds)
    assert torch.equal(batched.samples[0].sigmas, batched.schedule[1:4])
    assert batched.dit_forwards == 8
    assert min(dataclasses.astuple(batched.timings)) > 0


def test_microgroup_matches_one_by_one_for_the_same_seeds(tiny_model, batched):
    single = generate_one_by_one(InProcessBackend(tiny_model), REQUEST)
    # Batch variance only: a batch of 4 and of 1 sum the DiT's matmuls in another order, which
    # moves fp32 values by ~1e-6, never more than one level of an 8-bit pixel.
    diff = np.abs(single.images.astype(int) - batched.images.astype(int))
    assert diff.max() <= 1
    torch.testing.assert_close(single.latents, batched.latents, rtol=0, atol=1e-4)
    torch.testing.assert_close(single.log_probs, batched.log_probs, rtol=0, atol=1e-4)
    assert single.dit_forwards == 4 * batched.dit_forwards


def test_samples_of_a_group_differ(batched):
    images = batched.images.reshape(4, -1).astype(float)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(images[i] - images[j]).mean() > 1.0


def test_same_request_is_deterministic(tiny_model, batched):
    again = InProcessBackend(tiny_model).generate(REQUEST)
    assert np.array_equal(again.images, batched.images)
    assert torch.equal(again.log_probs, batched.log_probs)


def test_text_encoder_runs_once_per_request_even_with_guidance(tiny_model):
    calls = []
    handle = tiny_model.text_encoder.register_forward_hook(lambda m, a, o: calls.append(a[0]))
    try:
        guided = dataclasses.replace(REQUEST, guidance_scale=3.0, negative_prompt="")
        InProcessBackend(tiny_model).generate(guided)
    finally:
        handle.remove()
    # One call, with the prompt and the negative prompt as its two rows.
    assert len(calls) == 1 and calls[0].shape[0] == 2


def test_guidance_rows_share_one_forward_per_step(tiny_model):
    rows = []
    handle = tiny_model.transformer.register_forward_hook(
        lambda m, a, kw, o: rows.append(kw["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        guided = dataclasses.replace(REQUEST, guidance_scale=3.0)
        result = InProcessBackend(tiny_model).generate(guided)
    finally:
        handle.remove()
    assert rows == [8] * 8 and result.dit_forwards == 8


def test_ode_request_has_no_stochastic_steps(tiny_model):
    ode = dataclasses.replace(REQUEST, sde_step_indices=(), noise_level=0.0)
    result = InProcessBackend(tiny_model).generate(ode)
    assert result.log_probs.shape == (4, 0) and result.latents.shape[1] == 0
    assert np.array_equal(result.images, InProcessBackend(tiny_model).generate(ode).images)


def test_replay_reproduces_the_rollout_log_probs(tiny_model, batched):
    """What the trainer does: the same microgroup, the stored chain, gradients on."""
    conditioning = tiny_model.encode_prompts([REQUEST.prompt]).repeat(REQUEST.num_outputs)
    latents = batched.latents
    for k, index in enumerate(REQUEST.sde_step_indices):
        step = stochastic_step(
            tiny_model,
            latents[:, k],
            batched.schedule,
            index,
            conditioning,
            REQUEST,
            prev_sample=latents[:, k + 1],
        )
        assert step.log_prob.requires_grad
        ratio = torch.exp(step.log_prob.detach() - batched.log_probs[:, k])
        assert (ratio - 1).abs().max() < 1e-5
