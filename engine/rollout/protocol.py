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
from typing import Any, NamedTuple

import msgpack
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.rollout.latents import LatentLayout, LatentShapeError
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample

TENSOR_MARK = "__tensor__"
#: The one tensor name inside each safetensors blob, as sglang writes it.
_BLOB_KEY = "t"


class ProtocolError(ValueError):
    """A payload that does not follow the rollout protocol; the message names the field."""


class WorkerRefusal(ValueError):
    """A request sglang's worker refuses while generating (its route then answers 500)."""


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
    """The JSON body of ``POST /rollout/generate`` for ``request``, as sglang 0.5.23 reads it.

    ``seed`` is the first seed; the exact list rides in ``extra_sampling_params.seed``, which
    sglang merges into its sampling params (``rollout_api.py`` line 303), so seeds that wrap at
    2^31 stay exact. A training request asks for the chain x_k .. x_{k+T}: sglang records the
    latents *before* each step in ``rollout_return_step_indices`` and the final latents as step
    N, so the window k .. k+T-1 needs the indices k .. k+T. ``cps`` asks for the log-prob
    without constants, which is the quantity ``engine.sde.cps_step`` computes; ``sde`` for the
    Gaussian log-density. An empty window (evaluation) asks for images only (``rollout:
    false``): sglang would record no trajectory and score nothing.
    """
    window = list(request.sde_step_indices)
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seeds[0],
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.num_inference_steps,
        "num_outputs_per_prompt": request.num_outputs,
        "guidance_scale": request.guidance_scale,
        "true_cfg_scale": request.true_cfg_scale,
        "rollout": bool(window),
        "suppress_logs": True,
        "extra_sampling_params": {"seed": list(request.seeds)},
    }
    if window:
        body |= {
            "rollout_sde_type": request.sde_type,
            "rollout_noise_level": request.noise_level,
            "rollout_log_prob_no_const": request.sde_type == "cps",
            "rollout_debug_mode": False,
            "rollout_return_dit_trajectory": True,
            "rollout_sde_step_indices": window,
            "rollout_return_step_indices": list(range(window[0], window[-1] + 2)),
        }
    return body


class WireRequest(NamedTuple):
    """What a ``POST /rollout/generate`` body asks of the compatible server, with sglang
    0.5.23's meaning of each field (``io_struct.py`` lines 63-99)."""

    #: The samples to generate: seeds, size, steps and the stochastic steps.
    request: RolloutRequest
    #: ``seed`` as sent, repeated in every output's ``seed``; None when absent (sglang then
    #: samples with ``DEFAULT_SEED`` and fails to answer).
    seed: int | None
    #: ``rollout``: false answers images only.
    rollout: bool
    #: ``rollout_log_prob_no_const``: -(x' - mean)^2 instead of the Gaussian log-density.
    no_const: bool
    #: ``rollout_return_dit_trajectory``.
    return_trajectory: bool
    #: ``rollout_return_step_indices``: the steps whose input latents are recorded (N: the
    #: final latents); None records every one.
    return_steps: tuple[int, ...] | None


#: sglang's ``SamplingParams.seed`` default (``sampling_params.py`` line 349).
DEFAULT_SEED = 42


def parse_request(payload: Any, *, height: int, width: int, steps: int) -> WireRequest:
    """The ``WireRequest`` a body asks for (the compatible server's side); unknown fields are
    ignored as sglang's pydantic model ignores them, and absent ones take sglang's defaults
    (``height``, ``width`` and ``steps`` are the served model's). ``ProtocolError`` for a
    body that does not fit the request model (sglang answers 422), ``WorkerRefusal`` for what
    its worker refuses (500) and ``ValueError`` for sampling params it refuses (400)."""
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"the request must be an object, not {type(payload).__name__}")
    prompt = _field(payload, "prompt", str)
    count = _field(payload, "num_outputs_per_prompt", int, 1)
    if count < 1:
        raise ValueError(f"num_outputs_per_prompt must be a positive int, got {count}")
    extra = _field(payload, "extra_sampling_params", Mapping, {})
    first = _field(payload, "seed", int, None)
    seeds = extra.get("seed", DEFAULT_SEED if first is None else first)
    if _is_int(seeds):
        seeds = [seeds + i for i in range(count)]
    if not (isinstance(seeds, list) and seeds and all(_is_int(s) for s in seeds)):
        raise ValueError("seed must be a non-negative int or list of ints")
    if len(seeds) != count:
        # request_utils.py's normalize_output_seeds, in the worker: not a sampling-params 400.
        raise WorkerRefusal(f"seed list length must match num_outputs_per_prompt ({count}), "
                            f"got {len(seeds)}")  # fmt: skip
    sizes = {"height": height, "width": width, "num_inference_steps": steps}
    for name, default in sizes.items():
        sizes[name] = _field(payload, name, int, default)
        if sizes[name] < 1:
            raise ValueError(f"{name} must be a positive int, got {sizes[name]}")
    rollout = _field(payload, "rollout", bool, True)
    sde_type = _field(payload, "rollout_sde_type", str, "sde")
    if sde_type not in ("sde", "cps", "ode"):
        raise ValueError(f"Unsupported sde_type: {sde_type}")
    window = _indices(payload, "rollout_sde_step_indices")
    return_steps = _indices(payload, "rollout_return_step_indices")
    total = sizes["num_inference_steps"]
    # None makes every step stochastic; a list only the steps it names (sglang's controller).
    stochastic = tuple(range(total)) if window is None else tuple(i for i in range(total)
                                                                  if i in window)  # fmt: skip
    request = RolloutRequest(
        prompt=prompt,
        seeds=tuple(seeds),
        height=sizes["height"],
        width=sizes["width"],
        num_inference_steps=total,
        sde_step_indices=stochastic if rollout and sde_type != "ode" else (),
        sde_type="sde" if sde_type == "ode" else sde_type,
        noise_level=_field(payload, "rollout_noise_level", float, 0.7),
        guidance_scale=_field(payload, "guidance_scale", float, 1.0),
        true_cfg_scale=_field(payload, "true_cfg_scale", float, 1.0),
        negative_prompt=_field(payload, "negative_prompt", str, ""),
    )
    no_const = _field(payload, "rollout_log_prob_no_const", bool, False)
    if rollout and not no_const and sde_type == "ode":
        raise ValueError("p_ode is always 0: set rollout_log_prob_no_const to True")
    return WireRequest(
        request=request,
        seed=first,
        rollout=rollout,
        no_const=no_const,
        return_trajectory=_field(payload, "rollout_return_dit_trajectory", bool, False),
        return_steps=return_steps,
    )


class Sampled(NamedTuple):
    """What the compatible server's loop produced for one ``WireRequest``."""

    #: uint8 [M, H, W, 3].
    images: np.ndarray
    #: Per sample and step, float32 [M, N]: each step's log-prob, 0 on ODE steps.
    log_probs: torch.Tensor
    #: Step index -> the latents before that step, [M, ...] (N: the final latents).
    recorded: dict[int, torch.Tensor]
    #: float32 [N + 1].
    schedule: torch.Tensor
    timings: PhaseTimings
    dit_forwards: int


def result_payload(wire: WireRequest, sampled: Sampled, request_id: str) -> list[dict[str, Any]]:
    """One ``RolloutResponse`` entry per sample, as sglang 0.5.23's ``_build_response``
    (``rollout_api.py`` lines 197-271) shapes it.

    The image is float [3, 1, H, W] in [0, 1]; ``seed`` repeats the request's ``seed`` in
    every entry. With ``rollout`` the log-probs are per step [N] (0 on ODE steps) and the
    trajectory, when asked for, holds the recorded latents [R, ...] in step order, their
    scheduler timesteps (t x 1000, 0 for the final latents) and the whole schedule. Beyond
    sglang's fields it adds ``timings`` and ``dit_forwards``, which the client reads when
    present (a real server gives only ``inference_time_s``).
    """
    steps, timings, schedule = wire.request.num_inference_steps, sampled.timings, sampled.schedule
    recorded = sorted(sampled.recorded)
    times = [schedule[i] * 1000 if i < steps else schedule.new_zeros(()) for i in recorded]
    entries = []
    for row, image in enumerate(sampled.images):
        planar = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        entry: dict[str, Any] = {
            "request_id": request_id,
            "prompt": wire.request.prompt,
            "seed": wire.seed,
            "generated_output": encode_tensor((planar.float() / 255)[:, None]),
            "rollout_log_probs": None,
            "rollout_debug_tensors": None,
            "denoising_env": None,
            "dit_trajectory": None,
            "inference_time_s": timings.total,
            "peak_memory_mb": None,
            "timings": {"encode": timings.encode, "denoise": timings.denoise,
                        "decode": timings.decode},
            "dit_forwards": sampled.dit_forwards,
        }  # fmt: skip
        if wire.rollout:
            entry["rollout_log_probs"] = encode_tensor(sampled.log_probs[row])
            if wire.return_trajectory and recorded:
                chain = torch.stack([sampled.recorded[i][row] for i in recorded])
                entry["dit_trajectory"] = {
                    "latents": encode_tensor(chain),
                    "timesteps": encode_tensor(torch.stack(times)),
                    "sigmas": encode_tensor(schedule),
                }
        entries.append(entry)
    return entries


def parse_result(
    payload: Any, request: RolloutRequest, layout: LatentLayout | None = None
) -> RolloutResult:
    """The ``RolloutResult`` of an answer to ``request``; raises ``ProtocolError`` unless it
    holds one entry per seed with tensors whose shapes fit the request.

    A training request needs each entry's trajectory: the chain x_k .. x_{k+T} (or every
    step's latents, cut to the window) with the whole schedule, and the log-probs of the window
    (or of every step, cut to it). ``layout`` turns the chain into the trainer's latents
    (unpacked, in its dtype, on its device; ``engine.rollout.latents``); without it the chain
    is kept as sent. An evaluation request (no window) reads the images alone: its samples
    have no log-probs or latents and the result an empty schedule.
    """
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
        # sglang repeats the request's first seed in every entry: the seeds are the request's.
        image = _image(decode_tensor(entry.get("generated_output"), f"{where}.generated_output"),
                       request, f"{where}.generated_output")  # fmt: skip
        if not window:
            empty = torch.zeros(0) if layout is None else torch.zeros(
                (0, *layout.shape(request.height, request.width)),
                dtype=layout.dtype, device=layout.device)  # fmt: skip
            samples.append(RolloutSample(seed, image, torch.zeros(0), empty, torch.zeros(0)))
            continue
        trajectory = entry.get("dit_trajectory")
        if not isinstance(trajectory, Mapping):
            raise ProtocolError(f"{where}.dit_trajectory is missing: send "
                                "rollout_return_dit_trajectory=true")  # fmt: skip
        sigmas = decode_tensor(trajectory.get("sigmas"), f"{where}.dit_trajectory.sigmas")
        if sigmas.shape != (steps + 1,):
            raise ProtocolError(f"{where}.dit_trajectory.sigmas has shape {list(sigmas.shape)}, "
                                f"expected [{steps + 1}] (the whole schedule)")  # fmt: skip
        schedule = sigmas.float() if schedule is None else schedule
        field = f"{where}.dit_trajectory.latents"
        latents = _window(decode_tensor(trajectory.get("latents"), field), window, steps, field,
                          chain=True)  # fmt: skip
        if layout is not None:
            try:
                latents = layout.adopt(latents, request.height, request.width)
            except LatentShapeError as error:
                raise ProtocolError(f"{field} {error}") from None
        field = f"{where}.rollout_log_probs"
        log_probs = _window(decode_tensor(entry.get("rollout_log_probs"), field), window, steps,
                            field, chain=False)  # fmt: skip
        first = window[0]
        samples.append(
            RolloutSample(
                seed=seed,
                image=image,
                log_probs=log_probs.float().reshape(len(window)),
                latents=latents,
                sigmas=schedule[first : first + len(window) + 1],
            )
        )
    return RolloutResult(
        request=request,
        samples=tuple(samples),
        schedule=torch.zeros(0) if schedule is None else schedule,
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
    if values.shape[:1] == (steps + (1 if chain else 0),):
        return values[window[0] : window[0] + size]
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


def _indices(payload: Mapping[str, Any], name: str) -> tuple[int, ...] | None:
    """A list of step indices, or None when absent (sglang: every step)."""
    value = payload.get(name)
    if value is None:
        return None
    if not (isinstance(value, list) and all(_is_int(i) for i in value)):
        raise ProtocolError(f"{name} must be a list of step indices")
    return tuple(value)


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
