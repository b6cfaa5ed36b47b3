"""The remote reward against real HTTP servers on 127.0.0.1: the reference server and scripted
ones that time out, fail or answer wrongly."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from engine.events import encode_image
from engine.net.ports import free_port
from engine.rewards import build_reward
from engine.rewards.color import ColorReward
from engine.rewards.remote import RemoteConfig, RemoteReward, RemoteRewardError
from engine.rewards.serve import make_server

IMAGES = np.stack(
    [np.full((4, 6, 3), (255, 0, 0), np.uint8), np.full((4, 6, 3), (0, 0, 255), np.uint8)]
)
PROMPTS = ["a red image", "a red image"]
METADATA: list[dict[str, Any]] = [{"group_index": 0}, {"group_index": 0, "color": "blue"}]


def serve(server):
    """Run ``server`` on a thread; return its URL and a function that stops it."""
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.server_port}/score", stop


@pytest.fixture
def reference_server():
    url, stop = serve(make_server(ColorReward(), port=0))
    yield url
    stop()


class Script:
    """A server that answers each request from a list of (status, body) in turn; ``None`` holds
    the request until the test ends, longer than any client timeout here."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []
        self.release = threading.Event()
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                script.requests.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                reply = script.replies[min(len(script.requests), len(script.replies)) - 1]
                if reply is None:
                    script.release.wait(timeout=30)
                    return
                status, body = reply
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        self.url, self._stop = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))

    def stop(self):
        self.release.set()
        self._stop()


@pytest.fixture
def scripted():
    servers = []

    def start(*replies):
        servers.append(Script(*replies))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def remote(url, **options):
    return RemoteReward(RemoteConfig(url, **{"backoff_s": 0.0, "timeout_s": 5.0, **options}))


def test_scores_and_components_come_back_from_the_reference_server(reference_server):
    output = remote(reference_server)(IMAGES, PROMPTS, METADATA)
    local = ColorReward()(IMAGES, PROMPTS, METADATA)
    np.testing.assert_allclose(output.scores, local.scores)
    assert output.scores.tolist() == [1.0, 1.0]  # the metadata's colour reached the server
    assert set(output.components) == {"mean_red", "mean_green", "mean_blue"}
    np.testing.assert_allclose(output.components["mean_red"], [1.0, 0.0])


def test_the_request_follows_the_protocol(scripted):
    server = scripted((200, {"scores": [0.25, 0.5]}))
    output = remote(server.url)(IMAGES, PROMPTS, METADATA)
    assert output.scores.tolist() == [0.25, 0.5]
    assert output.components == {}
    (request,) = server.requests
    assert request["protocol"] == 1
    assert request["prompts"] == PROMPTS
    assert request["metadata"] == METADATA
    assert request["images"][0]["shape"] == [4, 6, 3]
    assert request["images"][0]["dtype"] == "uint8"


def test_a_busy_server_is_retried(scripted):
    server = scripted((503, {"error": "warming up"}), (200, {"scores": [1, 2]}))
    assert remote(server.url, retries=2)(IMAGES, PROMPTS, METADATA).scores.tolist() == [1, 2]
    assert len(server.requests) == 2


def test_a_server_error_fails_clearly_after_the_retries(scripted):
    server = scripted((500, {"error": "CUDA out of memory"}))
    message = (
        "failed 3 attempts (HTTP 500: CUDA out of memory; HTTP 500: CUDA out of memory; "
        "HTTP 500: CUDA out of memory): check that it is up and reachable, or raise "
        "GROUPWISE_REMOTE_REWARD_TIMEOUT (now 5 s) or GROUPWISE_REMOTE_REWARD_RETRIES (now 2)"
    )
    with pytest.raises(RemoteRewardError, match=re.escape(message)):
        remote(server.url, retries=2)(IMAGES, PROMPTS, METADATA)
    assert len(server.requests) == 3


def test_a_slow_server_times_out_on_every_attempt(scripted):
    server = scripted(None)
    with pytest.raises(RemoteRewardError, match=r"failed 2 attempts \(no answer within 0.2 s; no"):
        remote(server.url, timeout_s=0.2, retries=1)(IMAGES, PROMPTS, METADATA)
    assert len(server.requests) == 2


def test_a_rejected_batch_is_not_sent_again(scripted):
    server = scripted((400, {"error": "protocol 1 is not supported"}))
    with pytest.raises(RemoteRewardError, match=r"refused the batch \(HTTP 400: protocol 1 is not"):
        remote(server.url, retries=3)(IMAGES, PROMPTS, METADATA)
    assert len(server.requests) == 1


def test_a_wrong_answer_is_a_clear_error(scripted):
    server = scripted((200, {"scores": [1.0]}), (200, {"score": 1}), (200, {"scores": ["x", 1]}))
    reward = remote(server.url)
    with pytest.raises(RemoteRewardError, match="returned 'scores' with 1 values for 2 images"):
        reward(IMAGES, PROMPTS, METADATA)
    with pytest.raises(RemoteRewardError, match="answered without 'scores'"):
        reward(IMAGES, PROMPTS, METADATA)
    with pytest.raises(RemoteRewardError, match="values that are not numbers"):
        reward(IMAGES, PROMPTS, METADATA)


def test_nobody_listening_fails_after_the_retries():
    with pytest.raises(RemoteRewardError, match=r"failed 2 attempts .*ConnectionRefusedError"):
        remote(f"http://127.0.0.1:{free_port()}/score", retries=1)(IMAGES, PROMPTS, METADATA)


def test_the_reference_server_rejects_malformed_batches(reference_server):
    from urllib.error import HTTPError
    from urllib.request import urlopen

    with pytest.raises(HTTPError) as caught:
        urlopen(reference_server, data=json.dumps({"protocol": 2}).encode(), timeout=5)
    assert caught.value.code == 400
    assert "protocol 2 is not supported: send 1" in json.loads(caught.value.read())["error"]
    mismatched = {"protocol": 1, "prompts": ["a", "b"], "images": [encode_image(IMAGES[0])]}
    with pytest.raises(HTTPError) as caught:
        urlopen(reference_server, data=json.dumps(mismatched).encode(), timeout=5)
    assert caught.value.code == 400
    assert "1 images need 1 prompts" in json.loads(caught.value.read())["error"]
    with pytest.raises(RemoteRewardError, match=r"HTTP 500: prompt 'a cat' names no colour"):
        remote(reference_server, retries=0)(IMAGES[:1], ["a cat"], [{}])


def test_settings_come_from_the_environment(reference_server, monkeypatch):
    monkeypatch.delenv("GROUPWISE_REMOTE_REWARD_URL", raising=False)
    with pytest.raises(ValueError, match="set GROUPWISE_REMOTE_REWARD_URL"):
        build_reward("remote")
    monkeypatch.setenv("GROUPWISE_REMOTE_REWARD_URL", reference_server)
    monkeypatch.setenv("GROUPWISE_REMOTE_REWARD_TIMEOUT", "7.5")
    monkeypatch.setenv("GROUPWISE_REMOTE_REWARD_RETRIES", "1")
    reward = build_reward("remote")
    assert isinstance(reward, RemoteReward)
    assert (reward.config.timeout_s, reward.config.retries) == (7.5, 1)
    assert reward(IMAGES, PROMPTS, METADATA).scores.tolist() == [1.0, 1.0]
    monkeypatch.setenv("GROUPWISE_REMOTE_REWARD_RETRIES", "two")
    with pytest.raises(ValueError, match="GROUPWISE_REMOTE_REWARD_RETRIES='two' is not an integer"):
        build_reward("remote")
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        RemoteConfig("reward-host:8100")
