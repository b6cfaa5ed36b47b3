"""Serve any registered reward over HTTP, speaking the remote reward's protocol.

For a reward model on its own GPU host:

    python -m engine.rewards.serve pickscore --path /models/PickScore_v1 --port 8100

and point the training run at it with ``GROUPWISE_REMOTE_REWARD_URL=http://host:8100/score`` and
the reward ``remote``. Batches are scored one at a time, in the order they arrive.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from engine.events import decode_image
from engine.rewards.base import Reward, check_batch
from engine.rewards.registry import build_reward
from engine.rewards.remote import PROTOCOL_VERSION

log = logging.getLogger(__name__)


def make_server(reward: Reward, host: str = "127.0.0.1", port: int = 8100) -> ThreadingHTTPServer:
    """An HTTP server that scores POSTed batches with ``reward``; call ``serve_forever`` on it.

    Port 0 picks a free port (``server.server_address`` tells which).
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                images, prompts, metadata = _batch(request)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": f"malformed batch: {error}"})
                return
            try:
                # One batch at a time: reward models are rarely thread-safe.
                with lock:
                    output = reward(images, prompts, metadata)
            except Exception as error:  # the client needs the reason, not a dropped connection
                log.exception("scoring a batch of %d failed", len(prompts))
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{error}"})
                return
            self._reply(
                HTTPStatus.OK,
                {
                    "scores": output.scores.tolist(),
                    "components": {k: v.tolist() for k, v in output.components.items()},
                },
            )

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def _batch(request: Any) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    if request.get("protocol") != PROTOCOL_VERSION:
        raise ValueError(
            f"protocol {request.get('protocol')!r} is not supported: send {PROTOCOL_VERSION}"
        )
    prompts = [str(p) for p in request["prompts"]]
    images = [decode_image(i) for i in request["images"]]
    metadata = [dict(m) for m in request.get("metadata") or [{}] * len(prompts)]
    if len({image.shape for image in images}) > 1:
        raise ValueError("the images of one batch must share one size")
    batch = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    check_batch(batch, prompts, metadata)
    return batch, prompts, metadata


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m engine.rewards.serve NAME [--path DIR] [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(description="Serve a registered reward over HTTP.")
    parser.add_argument("name", help="the reward's registered name, e.g. pickscore")
    parser.add_argument("--path", help="its weights directory, if it loads a model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = make_server(build_reward(args.name, args.path), args.host, args.port)
    log.info("serving reward '%s' on http://%s:%d/", args.name, args.host, server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main()
