"""A rollout server compatible with SGLang-D: the in-process backend over the same HTTP protocol.

``python -m engine serve-rollout --model tiny|DIR [--family F] --host H --port N`` serves one
model so that a machine without sglang answers rollouts and the HTTP client is tested end to
end on the CPU. It answers as sglang 0.5.23 does for every field the client uses (the same
conformance tests run against both: ``tests/sglang_d``; docs/sglang.md has the table).
Endpoints, as sglang names them:

- ``POST /rollout/generate``: JSON or msgpack request, msgpack answer (``engine.rollout.protocol``);
  422 with ``{"detail": ...}`` for a body that does not fit the request model, 400 for sampling
  params sglang refuses (a negative seed, a seed list of the wrong length).
- ``POST /update_weights_from_disk`` ``{"model_path", "target_modules"}``: a full transformer.
- ``POST /v1/set_lora`` ``{"lora_nickname", "lora_path"}``: diffusers-format LoRA adapters,
  reloaded only when the nickname or the path changes, as sglang does.
- ``POST /get_weights_checksum`` ``{"module_names"}``: ``{"transformer": sha256}``.
- ``POST /release_memory_occupation``, ``/resume_memory_occupation``: ``{"success", "sleeping",
  "message"}``; while released, generation and full weight loads fail (500), as in sglang;
  nothing to free on the CPU.
- ``GET /health``, ``GET /model_info``, ``GET /server_stats`` (requests in flight now, the most
  ever in flight, requests answered; ``POST /server_stats/reset`` zeroes the last two).

``/model_info`` adds ``dtype`` (``bfloat16``, ``float16``, ``float32``: what the model computes
in) to sglang's fields, so the client can refuse a server that disagrees with the recipe.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from engine.models.base import FlowModel
from engine.models.precision import dtype_for, dtype_name
from engine.rollout.in_process import denoise, encode_request, seed_generators
from engine.rollout.protocol import (
    ProtocolError,
    Sampled,
    WireRequest,
    WorkerRefusal,
    pack,
    parse_request,
    result_payload,
    unpack,
)
from engine.rollout.types import PhaseTimings
from engine.rollout.weights import MODULE, load_full, load_lora, weights_checksum
from engine.sde import step_log_prob

MSGPACK = "application/msgpack"
#: Steps of a request that names none.
DEFAULT_STEPS = 50


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class RolloutService:
    """The model, its weight updates and request counters, shared by the handler threads.

    Generation holds the weights shared; a weight update holds them alone, so no request ever
    sees half-loaded weights.
    """

    def __init__(self, model: FlowModel, model_path: str, family: str) -> None:
        self.model, self.model_path, self.family = model, model_path, family
        self._lock = threading.Condition()
        self._readers = 0
        self._writing = False
        self.in_flight = self.max_in_flight = self.answered = 0
        self.released = False
        #: LoRA nickname -> the path it was loaded from (sglang's ``loaded_adapter_paths``).
        self.adapters: dict[str, str] = {}
        #: Defaults for absent sizes and steps: the served model's.
        self.size = 32 if family == "tiny" else 1024

    def generate(self, payload: Any) -> bytes:
        try:
            wire = parse_request(payload, height=self.size, width=self.size, steps=DEFAULT_STEPS)
        except ProtocolError as error:
            raise _HttpError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None
        except WorkerRefusal as error:
            raise _HttpError(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"Generation failed: {error}"
            ) from None
        except ValueError as error:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"Invalid sampling params: {error}") from None
        if wire.seed is None:
            # sglang 0.5.23 samples, then fails to build an answer without a seed (a 500).
            raise _HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, "RolloutResponse: seed is None")
        with self._lock:
            if self.released:
                raise _HttpError(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "Server is sleeping. Call resume_memory_occupation first.",
                )
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._lock.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            sampled = self.sample(wire)
        finally:
            with self._lock:
                self._readers -= 1
                self.in_flight -= 1
                self.answered += 1
                self._lock.notify_all()
        return pack(result_payload(wire, sampled, uuid.uuid4().hex))

    def sample(self, wire: WireRequest) -> Sampled:
        """Run ``wire``'s loop, recording the latents and log-probs sglang would return."""
        model, request = self.model, wire.request
        steps = request.num_inference_steps
        started = time.perf_counter()
        conditioning = encode_request(model, request)
        encoded = time.perf_counter()
        record: tuple[int, ...] | range = ()
        if wire.rollout and wire.return_trajectory:
            record = range(steps + 1) if wire.return_steps is None else wire.return_steps
        run = denoise(model, request, conditioning, seed_generators(model, request.seeds),
                      record=record)  # fmt: skip
        denoised = time.perf_counter()
        images = model.decode(run.final, request.height, request.width)
        decoded = time.perf_counter()
        log_probs = torch.zeros(request.num_outputs, steps)
        for index, step in run.steps.items():
            log_probs[:, index] = step_log_prob(step, with_constants=not wire.no_const).cpu()
        return Sampled(
            images=images,
            log_probs=log_probs,
            recorded={i: latents.float().cpu() for i, latents in run.recorded.items()},
            schedule=run.schedule.float().cpu(),
            timings=PhaseTimings(encoded - started, denoised - encoded, decoded - denoised),
            dit_forwards=steps,
        )

    def update(self, load: Callable[[], None]) -> dict[str, Any]:
        """Run ``load`` with the weights held alone."""
        with self._lock:
            self._lock.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            load()
        except (ValueError, OSError) as error:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"cannot load the weights: {error}") from None
        finally:
            with self._lock:
                self._writing = False
                self._lock.notify_all()
        return {"success": True, "message": "weights updated"}

    def checksum(self) -> dict[str, str]:
        with self._lock:
            self._lock.wait_for(lambda: not self._writing)
            return {MODULE: weights_checksum(self.model.transformer)}

    def reset_stats(self) -> dict[str, int]:
        """Zero the counters of answered and most-in-flight requests (between measurements)."""
        with self._lock:
            self.max_in_flight, self.answered = self.in_flight, 0
        return self.stats()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "answered": self.answered,
            }


def _routes(service: RolloutService) -> dict[tuple[str, str], Callable[[Any], Any]]:
    transformer = service.model.transformer

    def update_from_disk(body: Any) -> dict[str, Any]:
        path = _text(body, "model_path")
        modules = body.get("target_modules") or [MODULE]
        if modules != [MODULE]:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"target_modules={modules}: only "
                             f"['{MODULE}'] is updatable here")  # fmt: skip
        if service.released:
            raise _HttpError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "Cannot update weights while the server is sleeping. "
                "Call resume_memory_occupation first.",
            )
        return service.update(lambda: load_full(transformer, Path(path)))

    def set_lora(body: Any) -> dict[str, Any]:
        nickname, path = _text(body, "lora_nickname"), _text(body, "lora_path")
        # sglang loads an adapter only when its nickname is new or its path changed
        # (lora/pipeline.py line 1147): the same folder twice keeps the first weights.
        if service.adapters.get(nickname) != path:
            service.update(lambda: load_lora(transformer, Path(path), nickname))
            service.adapters[nickname] = path
        return {"status": "ok", "message": f"Successfully set LoRA adapter(s): {nickname}"}

    def memory(released: bool) -> Callable[[Any], dict[str, Any]]:
        def answer(_: Any) -> dict[str, Any]:
            already = service.released == released
            service.released = released
            state = "sleeping" if released else "awake"
            return {"success": True, "sleeping": released,
                    "message": f"already {state}" if already else state}  # fmt: skip

        return answer

    return {
        ("GET", "/health"): lambda _: {"status": "ok"},
        ("GET", "/model_info"): lambda _: {
            "model_path": service.model_path,
            "is_generation": True,
            "model_type": "diffusion",
            "server": "groupwise",
            "family": service.family,
            "dtype": dtype_name(service.model.dtype),
        },
        ("GET", "/server_stats"): lambda _: service.stats(),
        ("POST", "/server_stats/reset"): lambda _: service.reset_stats(),
        ("POST", "/rollout/generate"): service.generate,
        ("POST", "/update_weights_from_disk"): update_from_disk,
        ("POST", "/v1/set_lora"): set_lora,
        ("POST", "/get_weights_checksum"): lambda _: service.checksum(),
        ("POST", "/release_memory_occupation"): memory(released=True),
        ("POST", "/resume_memory_occupation"): memory(released=False),
    }


def _text(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"{name} is required")
    return value


def make_server(service: RolloutService, host: str, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``service`` bound to ``host:port`` (0 picks a free port)."""
    routes = _routes(service)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the run's own output

        def _serve(self, method: str) -> None:
            route = routes.get((method, self.path.split("?")[0]))
            try:
                if route is None:
                    raise _HttpError(HTTPStatus.NOT_FOUND, f"no route {method} {self.path}")
                answer = route(self._body() if method == "POST" else None)
            except _HttpError as error:
                self._send(error.status, {"detail": error.detail})
                return
            except Exception as error:  # a failure while generating: the client may retry
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": f"{type(error).__name__}: {error}"}
                )
                return
            if isinstance(answer, bytes):
                self._reply(HTTPStatus.OK, answer, MSGPACK)
            else:
                self._send(HTTPStatus.OK, answer)

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Type", "").startswith(MSGPACK):
                try:
                    return unpack(raw)
                except ProtocolError as error:
                    raise _HttpError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None
            try:
                return json.loads(raw or b"{}")
            except ValueError as error:
                # FastAPI answers an undecodable body with 422, as sglang's routes do.
                raise _HttpError(
                    HTTPStatus.UNPROCESSABLE_ENTITY, f"the body is not JSON: {error}"
                ) from None

        def _send(self, status: HTTPStatus, answer: Any) -> None:
            self._reply(status, json.dumps(answer).encode(), "application/json")

        def _reply(self, status: HTTPStatus, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(model: str, family: str | None, host: str, port: int, dtype: str | None = None) -> int:
    """Load the model and serve until interrupted; prints ``serving on URL`` once bound.

    The model goes on the host's first GPU when it has one, as a one-process run's does, in
    ``dtype``; None resolves as an empty ``model.dtype`` does there, so a colocated server and
    its run agree by default.
    """
    from engine.models.loading import load_model

    directory = None if model == "tiny" else Path(model)
    chosen = family or ("tiny" if directory is None else _family_of(directory))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(
        chosen, directory, device=device, dtype=dtype_for(dtype, chosen, device.type)
    )
    service = RolloutService(loaded, model, chosen)
    server = make_server(service, host, port)
    print(f"serving on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _family_of(directory: Path) -> str:
    """The family whose pipeline class ``model_index.json`` names (``load_model`` explains a
    directory it cannot read)."""
    from engine.models.loading import PIPELINE_CLASSES

    try:
        name = json.loads((directory / "model_index.json").read_text("utf-8"))["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return "tiny"
    return next((fam for fam, cls in PIPELINE_CLASSES.items() if cls == name), "tiny")
