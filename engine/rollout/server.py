"""A rollout server compatible with SGLang-D: the in-process backend over the same HTTP protocol.

``python -m engine serve-rollout --model tiny|DIR [--family F] --host H --port N`` serves one
model so that a machine without sglang answers rollouts and the HTTP client is tested end to
end on the CPU. Endpoints (as sglang 0.5.23 names them; docs/sglang.md):

- ``POST /rollout/generate``: JSON or msgpack request, msgpack answer (``engine.rollout.protocol``);
  400 with ``{"detail": ...}`` for a malformed request.
- ``POST /update_weights_from_disk`` ``{"model_path", "target_modules"}``: a full transformer.
- ``POST /v1/set_lora`` ``{"lora_nickname", "lora_path"}``: diffusers-format LoRA adapters.
- ``POST /get_weights_checksum`` ``{"module_names"}``: ``{"transformer": sha256}``.
- ``POST /release_memory_occupation``, ``/resume_memory_occupation``: generation refused (503)
  while released; nothing to free on the CPU.
- ``GET /health``, ``GET /model_info``, ``GET /server_stats`` (requests in flight now, the most
  ever in flight, requests answered; ``POST /server_stats/reset`` zeroes the last two).

``/model_info`` adds ``dtype`` (``bfloat16``, ``float16``, ``float32``: what the model computes
in) to sglang's fields, so the client can refuse a server that disagrees with the recipe.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from engine.models.base import FlowModel
from engine.precision import dtype_for, dtype_name
from engine.rollout.in_process import InProcessBackend
from engine.rollout.protocol import ProtocolError, pack, parse_request, result_payload, unpack
from engine.rollout.weights import MODULE, load_full, load_lora, weights_checksum

MSGPACK = "application/msgpack"


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
        self.backend = InProcessBackend(model)
        self.model, self.model_path, self.family = model, model_path, family
        self._lock = threading.Condition()
        self._readers = 0
        self._writing = False
        self.in_flight = self.max_in_flight = self.answered = 0
        self.released = False

    def generate(self, payload: Any) -> bytes:
        try:
            request = parse_request(payload)
        except ProtocolError as error:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"invalid rollout request: {error}") from None
        with self._lock:
            if self.released:
                raise _HttpError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "memory is released: POST /resume_memory_occupation first",
                )
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._lock.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            result = self.backend.generate(request)
        finally:
            with self._lock:
                self._readers -= 1
                self.in_flight -= 1
                self.answered += 1
                self._lock.notify_all()
        return pack(result_payload(result, uuid.uuid4().hex))

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
        return service.update(lambda: load_full(transformer, Path(path)))

    def set_lora(body: Any) -> dict[str, Any]:
        nickname, path = _text(body, "lora_nickname"), _text(body, "lora_path")
        service.update(lambda: load_lora(transformer, Path(path), nickname))
        return {"status": "ok", "message": f"Successfully set LoRA adapter(s): {nickname}"}

    def release(_: Any) -> dict[str, Any]:
        service.released = True
        return {"success": True, "message": "released"}

    def resume(_: Any) -> dict[str, Any]:
        service.released = False
        return {"success": True, "message": "resumed"}

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
        ("POST", "/release_memory_occupation"): release,
        ("POST", "/resume_memory_occupation"): resume,
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
                    raise _HttpError(HTTPStatus.BAD_REQUEST, str(error)) from None
            try:
                return json.loads(raw or b"{}")
            except ValueError as error:
                raise _HttpError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from None

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
