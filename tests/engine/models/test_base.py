from __future__ import annotations

import numpy as np
import torch

from engine.models.base import flow_sigmas, to_uint8
from engine.models.tiny.model import tiny_scheduler


def test_sigmas_run_from_one_to_zero():
    sigmas = flow_sigmas(tiny_scheduler(), 8, None, linear_sigmas=False)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (9,)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and (sigmas.diff() < 0).all()


def test_to_uint8_maps_minus_one_to_one_onto_0_255():
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_uint8(images)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255]
