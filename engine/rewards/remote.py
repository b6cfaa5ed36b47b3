"""A reward served over HTTP, for reward models that run on their own machines.

Protocol (version 1, JSON; ``docs/rewards.md`` has examples): the client POSTs to the URL

    {"protocol": 1, "prompts": [str, ...], "metadata": [object, ...],
     "images": [{"dtype": "uint8", "shape": [H, W, 3], "base64": str}, ...]}

with one entry per image (the image form of ``engine.events``: raw RGB bytes, row-major). The
server answers 200 with ``{"scores": [number, ...], "components": {name: [number, ...]}}``
(``components`` optional), or an error status with ``{"error": str}``. Timeouts, refused or
dropped connections, server errors (5xx), 408 and 429 are retried with exponential backoff; any
other error status (4xx: a malformed batch) fails at once, since sending it again cannot help.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.events import encode_image
from engine.rewards.base import Images, RewardOutput, check_batch

PROTOCOL_VERSION = 1
#: Environment variable with the reward server's URL.
URL_SETTING = "GROUPWISE_REMOTE_REWARD_URL"
#: Environment variable with the seconds one attempt may take.
TIMEOUT_SETTING = "GROUPWISE_REMOTE_REWARD_TIMEOUT"
#: Environment variable with the number of retries after a failed attempt.
RETRIES_SETTING = "GROUPWISE_REMOTE_REWARD_RETRIES"
# Client errors that mean "busy, try again"; the other 4xx are the request's own fault.
_RETRIED_CLIENT_STATUSES = frozenset({408, 429})


class RemoteRewardError(RuntimeError):
    """The reward server could not score a batch; the message says why and what to check."""


@dataclass(frozen=True)
class RemoteConfig:
    """Where the reward server is and how patiently it is asked."""

    #: The endpoint the batches are POSTed to (``http://host:port/path``).
    url: str
    #: Seconds one attempt may take, connecting and scoring included.
    timeout_s: float = 120.0
    #: Further attempts after a failed one.
    retries: int = 3
    #: Seconds before the first retry; each later wait doubles, up to ``max_backoff_s``.
    backoff_s: float = 1.0
    #: The longest wait between two attempts.
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{URL_SETTING}={self.url!r} must be an http:// or https:// URL")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"{TIMEOUT_SETTING}={self.timeout_s} must be a positive number")
        if self.retries < 0:
            raise ValueError(f"{RETRIES_SETTING}={self.retries} must be 0 or more")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("the backoff times must be 0 or more seconds")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RemoteConfig:
        """Read ``GROUPWISE_REMOTE_REWARD_URL``, ``_TIMEOUT`` and ``_RETRIES``; raises
        ``ValueError`` naming the variable when one is unset or malformed."""
        env = os.environ if environ is None else environ
        url = env.get(URL_SETTING, "")
        if not url:
            raise ValueError(
                f"the remote reward needs its server: set {URL_SETTING}, e.g. "
                "http://reward-host:8100/score"
            )
        return cls(
            url=url,
            timeout_s=_number(env, TIMEOUT_SETTING, float, cls.timeout_s),
            retries=_number(env, RETRIES_SETTING, int, cls.retries),
        )


def _number(env: Mapping[str, str], name: str, kind: type[Any], default: Any) -> Any:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}"
        ) from None


class RemoteReward:
    """Scores from a reward server (module docstring: protocol, retries); the server's
    components are passed through."""

    def __init__(self, config: RemoteConfig | None = None) -> None:
        """Use ``config``, else the ``GROUPWISE_REMOTE_REWARD_*`` environment variables."""
        self.config = config or RemoteConfig.from_environment()

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        size = check_batch(images, prompts, metadata)
        try:
            body = json.dumps(
                {
                    "protocol": PROTOCOL_VERSION,
                    "prompts": list(prompts),
                    "metadata": [dict(m) for m in metadata],
                    "images": [encode_image(image) for image in images],
                }
            ).encode()
        except TypeError as error:
            raise ValueError(f"the remote reward sends metadata as JSON: {error}") from error
        return self._parse(self._post(body), size)

    def _post(self, body: bytes) -> Any:
        config = self.config
        failures: list[str] = []
        for attempt in range(config.retries + 1):
            if attempt:
                time.sleep(min(config.backoff_s * 2 ** (attempt - 1), config.max_backoff_s))
            request = urllib.request.Request(
                config.url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                reason = f"HTTP {error.code}: {_error_text(error)}"
                if error.code < 500 and error.code not in _RETRIED_CLIENT_STATUSES:
                    raise RemoteRewardError(
                        f"the reward server at {config.url} refused the batch ({reason}): "
                        "check the server's log and that it speaks protocol "
                        f"{PROTOCOL_VERSION}"
                    ) from error
                failures.append(reason)
            except (
                TimeoutError,
                urllib.error.URLError,
                ConnectionError,
                http.client.HTTPException,
            ) as error:
                failures.append(_network_text(error, config.timeout_s))
            except json.JSONDecodeError as error:
                raise RemoteRewardError(
                    f"the reward server at {config.url} answered with invalid JSON: {error}"
                ) from error
        raise RemoteRewardError(
            f"the reward server at {config.url} failed {len(failures)} attempts "
            f"({'; '.join(failures)}): check that it is up and reachable, or raise "
            f"{TIMEOUT_SETTING} (now {config.timeout_s:g} s) or {RETRIES_SETTING} "
            f"(now {config.retries})"
        )

    def _parse(self, answer: Any, size: int) -> RewardOutput:
        where = f"the reward server at {self.config.url}"
        if not isinstance(answer, dict) or "scores" not in answer:
            raise RemoteRewardError(f"{where} answered without 'scores': {str(answer)[:200]}")
        scores = _vector(answer["scores"], size, f"{where} returned 'scores'")
        components = answer.get("components") or {}
        if not isinstance(components, dict):
            raise RemoteRewardError(f"{where} returned 'components' that is not an object")
        return RewardOutput(
            scores,
            {
                str(name): _vector(values, size, f"{where} returned component '{name}'")
                for name, values in components.items()
            },
        )


def _vector(values: Any, size: int, what: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != size:
        count = len(values) if isinstance(values, list) else "no list of"
        raise RemoteRewardError(f"{what} with {count} values for {size} images")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RemoteRewardError(f"{what} with values that are not numbers") from None


def _error_text(error: urllib.error.HTTPError) -> str:
    raw = error.read()[:2000]
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or str(error.reason)


def _network_text(error: Exception, timeout_s: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"{type(reason).__name__}: {reason}"
