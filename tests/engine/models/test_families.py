"""Each supported family: a tiny random pipeline saved in the real format, loaded through
``load_model`` and run through one rollout request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models import load_model
from engine.rollout import InProcessBackend, RolloutRequest
from tests.engine.models import tiny_pipelines

FAMILIES = {
    "sd3": (tiny_pipelines.save_sd3, {"guidance_scale": 3.0}, ("text_encoder", "text_encoder_3")),
    "flux": (tiny_pipelines.save_flux, {"guidance_scale": 3.5}, ("text_encoder", "text_encoder_2")),
    "qwen-image": (tiny_pipelines.save_qwen_image, {"true_cfg_scale": 4.0}, ("text_encoder",)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_saved_tiny_pipeline_loads_and_generates(family, tmp_path):
    save, guidance, encoders = FAMILIES[family]
    model = load_model(family, save(tmp_path / family))
    assert model.family == family
    if hasattr(model, "max_sequence_length"):
        # The T5 default of 512 tokens only slows a 1-layer test model down.
        model.max_sequence_length = 16
    calls = {name: 0 for name in encoders}
    for name in encoders:
        module = getattr(model.pipeline, name)  # type: ignore[attr-defined]
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    forwards = []
    model.transformer.register_forward_hook(lambda _m, _a, out: forwards.append(out))

    request = RolloutRequest(
        "a red image",
        seeds=(3, 4),
        height=32,
        width=32,
        num_inference_steps=3,
        sde_step_indices=(0, 1),
        negative_prompt="blurry",
        **guidance,
    )
    result = InProcessBackend(model).generate(request)

    assert result.images.shape == (2, 32, 32, 3) and result.images.dtype == np.uint8
    assert result.log_probs.shape == (2, 2) and torch.isfinite(result.log_probs).all()
    assert result.latents.shape[:2] == (2, 3)
    assert not torch.equal(result.latents[0, -1], result.latents[1, -1])
    # Prompt and negative go through each text encoder together, once per request.
    assert calls == {name: 1 for name in encoders}
    # One batched DiT forward per step, guidance rows included.
    assert len(forwards) == request.num_inference_steps == result.dit_forwards
