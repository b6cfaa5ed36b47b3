"""SGLang-D's ``POST /rollout/generate`` wire format <-> ``RolloutRequest`` / ``RolloutResult``.

Checked against sglang 0.5.23 (docs/sglang.md): the request is a JSON object of
``RolloutRequest`` fields (``io_struct.py``); the answer is msgpack, a list with one entry per
output holding ``generated_output``, ``rollout_log_probs`` and ``dit_trajectory`` (latents,
timesteps, sigmas). A tensor travels as ``{"__tensor__": true, "data": <safetensors>, "shape",
"dtype"}``; 0.5.23 sends ``data`` as raw bytes, earlier releases as base64 text: both decode.

Decoding is strict: any missing field, wrong type, bad tensor or shape that does not fit the
request raises ``ProtocolError`` naming the field, so a malformed answer is never trained on.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample

TENSOR_MARK = "__tensor__"
#: The one tensor name inside each safetensors blob, as sglang writes it.
_BLOB_KEY = "t"


class ProtocolError(ValueError):
    """A payload that does not follow the rollout protocol; the message names the field."""


def pack(payload: Any) -> bytes:
    """msgpack bytes of plain data (bytes stay binary)."""
    return msgpack.packb(payload, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Plain data from msgpack bytes; raises ``ProtocolError`` for anything else."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ProtocolError(f"the body is not valid msgpack: {error}") from None


def encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """A tensor as the protocol carries it (safetensors bytes, as sglang 0.5.23 sends)."""
    tensor = tensor.detach().contiguous().cpu()
    return {
        TENSOR_MARK: True,
        "data": save_safetensors({_BLOB_KEY: tensor}),
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype),
    }


def decode_tensor(value: Any, field: str) -> torch.Tensor:
    """The tensor of an encoded ``value``; its blob must agree with the stated shape and dtype."""
    if not isinstance(value, Mapping) or value.get(TENSOR_MARK) is not True:
        raise ProtocolError(f"{field} must be an encoded tensor ({{'{TENSOR_MARK}': true, ...}})")
    data = value.get("data")
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{field}.data is not valid base64") from None
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"{field}.data must be bytes or base64 text")
    try:
        blob = load_safetensors(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ProtocolError(f"{field}.data is not a safetensors blob: {error}") from None
    if len(blob) != 1:
        raise ProtocolError(f"{field}.data must hold exactly one tensor, not {len(blob)}")
    (tensor,) = blob.values()
    shape = value.get("shape")
    if shape is not None and list(tensor.shape) != list(shape):
        raise ProtocolError(f"{field}: data has shape {list(tensor.shape)}, shape says {shape}")
    dtype = value.get("dtype")
    if dtype is not None and str(tensor.dtype) != str(dtype):
        raise ProtocolError(f"{field}: data has dtype {tensor.dtype}, dtype says {dtype}")
    return tensor


def request_payload(request: RolloutRequest) -> dict[str, Any]:
    """The JSON body of ``POST /rollout/generate`` for ``request``.

    ``seed`` is the first seed (sglang gives output i ``seed + i``); the exact list rides in
    ``extra_sampling_params.seed``, which sglang merges into its sampling params, so seeds that
    wrap at 2^31 stay exact. An empty window is sent as an ``ode`` rollout: sglang refuses a
    true log-prob with noise 0, and there is nothing stochastic to score.
    """
    window = list(request.sde_step_indices)
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seeds[0],
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.num_inference_steps,
        "num_outputs_per_prompt": request.num_outputs,
        "guidance_scale": request.guidance_scale,
        "true_cfg_scale": request.true_cfg_scale,
        "rollout": True,
        "rollout_sde_type": request.sde_type if window else "ode",
        "rollout_noise_level": request.noise_level,
        "rollout_log_prob_no_const": not window,
        "rollout_debug_mode": False,
        "rollout_return_dit_trajectory": True,
        "rollout_sde_step_indices": window,
        "rollout_return_step_indices": window,
        "suppress_logs": True,
        "extra_sampling_params": {"seed": list(request.seeds)},
    }


def parse_request(payload: Any) -> RolloutRequest:
    """The ``RolloutRequest`` a body asks for (the compatible server's side); unknown fields
    are ignored as sglang's pydantic model ignores them."""
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"the request must be an object, not {type(payload).__name__}")
    count = _field(payload, "num_outputs_per_prompt", int)
    if count < 1:
        raise ProtocolError(f"num_outputs_per_prompt={count} must be at least 1")
    extra = payload.get("extra_sampling_params") or {}
    if not isinstance(extra, Mapping):
        raise ProtocolError("extra_sampling_params must be an object")
    seeds = extra.get("seed")
    if seeds is None:
        first = _field(payload, "seed", int)
        seeds = [first + i for i in range(count)]
    elif not (isinstance(seeds, list) and all(_is_int(s) for s in seeds)):
        raise ProtocolError("extra_sampling_params.seed must be a list of whole numbers")
    if len(seeds) != count:
        raise ProtocolError(
            f"extra_sampling_params.seed has {len(seeds)} seeds for num_outputs_per_prompt={count}"
        )
    for name in ("height", "width", "num_inference_steps"):
        if _field(payload, name, int) < 1:
            raise ProtocolError(f"{name}={payload[name]} must be at least 1")
    sde_type = _field(payload, "rollout_sde_type", str, "sde")
    window = payload.get("rollout_sde_step_indices") or []
    if not (isinstance(window, list) and all(_is_int(i) for i in window)):
        raise ProtocolError("rollout_sde_step_indices must be a list of step indices")
    if sde_type not in ("sde", "cps", "ode"):
        raise ProtocolError(f"rollout_sde_type={sde_type!r} is unknown: use sde, cps or ode")
    try:
        return RolloutRequest(
            prompt=_field(payload, "prompt", str),
            seeds=tuple(seeds),
            height=_field(payload, "height", int),
            width=_field(payload, "width", int),
            num_inference_steps=_field(payload, "num_inference_steps", int),
            sde_step_indices=() if sde_type == "ode" else tuple(window),
            sde_type="sde" if sde_type == "ode" else sde_type,
            noise_level=_field(payload, "rollout_noise_level", float, 0.7),
            guidance_scale=_field(payload, "guidance_scale", float, 1.0),
            true_cfg_scale=_field(payload, "true_cfg_scale", float, 1.0),
            negative_prompt=_field(payload, "negative_prompt", str, ""),
        )
    except ValueError as error:
        raise ProtocolError(str(error)) from None


def result_payload(result: RolloutResult, request_id: str) -> list[dict[str, Any]]:
    """One ``RolloutResponse`` entry per sample, as the compatible server answers.

    Beyond sglang's fields it adds ``timings`` and ``dit_forwards``, which the client reads
    when present (a real server gives only ``inference_time_s``).
    """
    request, timings = result.request, result.timings
    first = request.sde_step_indices[0] if request.sde_step_indices else 0
    window_times = result.schedule[first : first + len(request.sde_step_indices) + 1]
    return [
        {
            "request_id": request_id,
            "prompt": request.prompt,
            "seed": sample.seed,
            "generated_output": encode_tensor(torch.from_numpy(np.ascontiguousarray(sample.image))),
            "rollout_log_probs": encode_tensor(sample.log_probs),
            "dit_trajectory": {
                "latents": encode_tensor(sample.latents),
                "timesteps": encode_tensor(window_times if request.sde_step_indices else
                                           result.schedule[:0]),
                "sigmas": encode_tensor(result.schedule),
            },
            "inference_time_s": timings.total,
            "timings": {"encode": timings.encode, "denoise": timings.denoise,
                        "decode": timings.decode},
            "dit_forwards": result.dit_forwards,
        }
        for sample in result.samples
    ]  # fmt: skip


def parse_result(payload: Any, request: RolloutRequest) -> RolloutResult:
    """The ``RolloutResult`` of an answer to ``request``; raises ``ProtocolError`` unless it
    holds one entry per seed with tensors whose shapes fit the request."""
    if not isinstance(payload, list):
        raise ProtocolError(f"the answer must be a list of outputs, not {type(payload).__name__}")
    if len(payload) != request.num_outputs:
        raise ProtocolError(
            f"the answer has {len(payload)} outputs for num_outputs_per_prompt="
            f"{request.num_outputs}"
        )
    window = request.sde_step_indices
    steps = request.num_inference_steps
    samples, schedule = [], None
    for index, (entry, seed) in enumerate(zip(payload, request.seeds, strict=True)):
        where = f"output[{index}]"
        if not isinstance(entry, Mapping):
            raise ProtocolError(f"{where} must be an object")
        image = _image(decode_tensor(entry.get("generated_output"), f"{where}.generated_output"),
                       request, f"{where}.generated_output")  # fmt: skip
        trajectory = entry.get("dit_trajectory")
        if not isinstance(trajectory, Mapping):
            raise ProtocolError(f"{where}.dit_trajectory is missing: send "
                                "rollout_return_dit_trajectory=true")  # fmt: skip
        sigmas = decode_tensor(trajectory.get("sigmas"), f"{where}.dit_trajectory.sigmas")
        if sigmas.shape != (steps + 1,):
            raise ProtocolError(f"{where}.dit_trajectory.sigmas has shape {list(sigmas.shape)}, "
                                f"expected [{steps + 1}] (the whole schedule)")  # fmt: skip
        schedule = sigmas.float() if schedule is None else schedule
        latents = decode_tensor(trajectory.get("latents"), f"{where}.dit_trajectory.latents")
        log_probs = decode_tensor(entry.get("rollout_log_probs"), f"{where}.rollout_log_probs")
        first = window[0] if window else 0
        latents = _window(latents, window, steps, f"{where}.dit_trajectory.latents", chain=True)
        log_probs = _window(log_probs, window, steps, f"{where}.rollout_log_probs", chain=False)
        samples.append(
            RolloutSample(
                seed=seed,
                image=image,
                log_probs=log_probs.float().reshape(len(window)),
                latents=latents,
                sigmas=schedule[first : first + len(window) + 1] if window else schedule[:0],
            )
        )
    assert schedule is not None  # the request has at least one seed
    return RolloutResult(
        request=request,
        samples=tuple(samples),
        schedule=schedule,
        timings=_timings(payload[0]),
        dit_forwards=int(payload[0].get("dit_forwards") or steps),
    )


def _window(
    values: torch.Tensor, window: tuple[int, ...], steps: int, field: str, *, chain: bool
) -> torch.Tensor:
    """The window's part of a per-step tensor: a chain has T + 1 entries (N + 1 for all
    steps), log-probs T (N for all steps, sliced to the window)."""
    size = len(window) + (1 if chain else 0)
    if values.shape[:1] == (size,):
        return values
    if window and values.shape[:1] == (steps + (1 if chain else 0),):
        return values[window[0] : window[0] + size]
    if not window and chain:
        return values[:0]
    raise ProtocolError(
        f"{field} has shape {list(values.shape)}: expected {size} entries along the first "
        f"dimension for sde_step_indices={list(window)}"
    )


def _image(tensor: torch.Tensor, request: RolloutRequest, field: str) -> np.ndarray:
    """uint8 [H, W, 3]; a float [3, H, W] (or [3, 1, H, W]) in [0, 1] is scaled as diffusers
    does for PIL (x * 255, rounded)."""
    size = (request.height, request.width)
    if tensor.dtype == torch.uint8 and tuple(tensor.shape) == (*size, 3):
        return tensor.numpy()
    if tensor.is_floating_point():
        planar = tensor.squeeze(1) if tensor.dim() == 4 else tensor
        if tuple(planar.shape) == (3, *size):
            scaled = (planar.float().clamp(0, 1) * 255).round().to(torch.uint8)
            return scaled.permute(1, 2, 0).contiguous().numpy()
    raise ProtocolError(
        f"{field} has shape {list(tensor.shape)} and dtype {tensor.dtype}: expected uint8 "
        f"[{size[0]}, {size[1]}, 3] or float [3, {size[0]}, {size[1]}]"
    )


def _timings(entry: Mapping[str, Any]) -> PhaseTimings:
    timings = entry.get("timings")
    if isinstance(timings, Mapping):
        try:
            return PhaseTimings(
                encode=float(timings["encode"]),
                denoise=float(timings["denoise"]),
                decode=float(timings["decode"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("timings must hold encode, denoise and decode seconds") from None
    total = entry.get("inference_time_s")
    return PhaseTimings(encode=0.0, denoise=float(total or 0.0), decode=0.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(payload: Mapping[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    """``payload[name]`` checked against ``kind``; None or absent takes ``default``."""
    value = payload.get(name)
    if value is None:
        if default is ...:
            raise ProtocolError(f"{name} is missing")
        return default
    if kind is float and _is_int(value):
        return float(value)
    if (kind is int and not _is_int(value)) or not isinstance(value, kind):
        raise ProtocolError(f"{name} must be {kind.__name__}, not {type(value).__name__}")
    return value
