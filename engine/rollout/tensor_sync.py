"""The body of sglang 0.5.23's ``POST /update_weights_from_tensor``: weights handed to a server
on the same GPU by CUDA IPC instead of a folder on disk.

As its ``weights_api.py`` (lines 60-93) and ``gpu_worker_post_training_mixin.py`` (lines 58-86)
read it: ``serialized_named_tensors`` holds one payload per server rank, each the base64 text of
torch's ``ForkingPickler`` dump of a list of (name, tensor) pairs (what sglang's
``MultiprocessingSerializer.serialize(..., output_str=True)`` writes); ``payload_gpu_uuids``
names the GPU each payload was exported from, and a rank takes the one from its own GPU.
Pickled CUDA tensors travel as IPC handles, so the server maps the trainer's memory without a
copy; the trainer must keep the tensors alive until the server answers. Only the GPU script
(``bench/gpu_sglang.sh``) sends it: CUDA IPC needs a GPU, and on the CPU tensors would travel
through shared memory instead.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch

# Importing torch.multiprocessing registers its reductions with ForkingPickler: a CUDA tensor
# pickles as an IPC handle, a CPU one as shared memory.
import torch.multiprocessing

from engine.rollout.weights import MODULE


def tensor_update_request(
    named_tensors: Iterable[tuple[str, torch.Tensor]], gpu_uuid: str | None = None
) -> dict[str, Any]:
    """The JSON body that loads ``named_tensors`` into the server's transformer.

    ``gpu_uuid`` is the trainer's GPU (``gpu_uuid(device)``); None sends one unlabelled payload,
    which sglang gives to a single-rank server.
    """
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump([(name, tensor.detach()) for name, tensor in named_tensors])
    body: dict[str, Any] = {
        "serialized_named_tensors": [base64.b64encode(buffer.getvalue()).decode("ascii")],
        "target_modules": [MODULE],
    }
    if gpu_uuid is not None:
        body["payload_gpu_uuids"] = [gpu_uuid]
    return body


def gpu_uuid(device: torch.device | int) -> str:
    """The UUID of a CUDA device as sglang compares it (lower case, no ``GPU-`` prefix)."""
    return str(torch.cuda.get_device_properties(device).uuid).lower()
