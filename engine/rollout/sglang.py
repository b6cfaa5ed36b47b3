"""The HTTP client of SGLang-D rollout servers (or the compatible ``engine.rollout.server``).

One request per microgroup (``num_outputs_per_prompt`` = M); up to ``server_concurrency``
requests per live server run at once, each sent to the live server with the fewest outstanding
requests. Transient failures (connection refused or reset, a 5xx, a timeout) are retried up to
``max_retries`` times with exponential backoff; a server whose connection fails is taken out of
the pool for good (it would come back with stale weights) and its requests move to the others,
so every request is answered exactly once or the rollout fails. Permanent failures (a 4xx, a
malformed answer) raise ``RolloutServerError`` naming the server, the request and the reason.

Checked against sglang 0.5.23's own route handlers and rollout code (``tests/sglang_d``): a
server's ``--batching-max-size`` must stay 1, since merged requests lose their seed lists.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from engine.net.egress import REFUSED, EgressPolicy, is_refusal
from engine.net.egress import policy as egress_policy
from engine.policy import ADAPTER
from engine.rollout.backend import BF16_SERVER, SAME_NUMERICS, ReplayTolerance
from engine.rollout.latents import LatentLayout
from engine.rollout.protocol import ProtocolError, parse_result, request_payload, unpack
from engine.rollout.types import RolloutRequest, RolloutResult
from engine.rollout.weights import MODULE, SavedWeights

#: How often a warming-up server's /health is asked again.
POLL_SECONDS = 0.5


class RolloutServerError(RuntimeError):
    """A rollout server failed for good, or none is left; the message says which and why."""


class _Transient(Exception):
    """Worth retrying; ``dead`` when the server itself is gone (its connection failed)."""

    def __init__(self, reason: str, *, dead: bool) -> None:
        super().__init__(reason)
        self.dead = dead


@dataclass
class _Server:
    url: str
    outstanding: int = 0
    alive: bool = True
    #: ``server`` of its ``/model_info``: "groupwise" for the compatible server.
    kind: str | None = None
    #: Its ``get_weights_checksum`` after the last sync (None before the first).
    checksum: str | None = None


def describe(request: RolloutRequest) -> str:
    """A request as an error names it."""
    return f"group {request.group_index} prompt {request.prompt!r} seeds {list(request.seeds)}"


class SGLangBackend:
    """Rollouts from a pool of servers; ``generate_many`` runs requests concurrently."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        server_concurrency: int = 4,
        timeout: float = 600.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        egress: EgressPolicy | None = None,
        dtype: str | None = None,
        latents: LatentLayout | None = None,
    ) -> None:
        """``egress`` decides which addresses may be connected to; None reads the
        administrator's ``GROUPWISE_EGRESS_ALLOW`` (``engine.net.egress``). ``dtype``: the
        ``model.dtype`` name the run computes in; ``check_servers`` refuses a server whose
        ``/model_info`` reports another (the compatible server reports its ``dtype``; a server
        that reports none is not checked). ``latents`` is the trainer's layout, which returned
        trajectories are unpacked and moved to; it may be set later (the loop loads the model
        after checking the servers)."""
        if not urls:
            raise ValueError("no server URL: give at least one")
        self.servers = [_Server(url.rstrip("/")) for url in urls]
        self.dtype = dtype
        self.server_concurrency = server_concurrency
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.egress = egress_policy() if egress is None else egress
        self.latents = latents
        #: Attempts that failed transiently and were tried again.
        self.retries = 0
        #: The trainer's checksum at the last sync.
        self._synced: str | None = None
        self._slots = threading.Condition()

    def check_servers(self, timeout: float = 10.0, startup_timeout: float = 0.0) -> None:
        """Ask every server's ``/health`` and ``/model_info``; raise ``RolloutServerError``
        naming each one that does not answer, or that computes in another dtype than
        ``dtype``, before any rollout work starts.

        A server that answers 503 is warming up (sglang answers so until its warm-up is
        done): it is asked again every ``POLL_SECONDS`` until ``startup_timeout`` has passed.
        One that cannot be reached fails at once.
        """
        deadline = time.monotonic() + startup_timeout
        failures: list[str] = []
        mismatches: list[tuple[str, str]] = []
        for server in self.servers:
            try:
                self._wait_ready(server, timeout, deadline)
                info = json.loads(self._call(server, "GET", "/model_info", None, timeout))
            except (_Transient, RolloutServerError, ValueError) as error:
                failures.append(f"{server.url} ({error})")
                continue
            info = info if isinstance(info, dict) else {}
            server.kind = info.get("server")
            reported = None if info.get("dtype") is None else _dtype_name(info["dtype"])
            if self.dtype is not None and reported not in (None, self.dtype):
                mismatches.append((server.url, str(reported)))
        problems = []
        if failures:
            problems.append(
                "rollout server(s) unreachable: " + "; ".join(failures)
                + ": start them or fix rollout.server_urls (a warming-up server is waited on "
                "for rollout.startup_timeout)"
            )  # fmt: skip
        if mismatches:
            # Samples from another dtype are not the policy's: their log-probs and the
            # replay check would disagree with the trainer's on every step.
            theirs = sorted({reported for _, reported in mismatches})
            problems.append(
                "rollout server(s) compute in another dtype than the run's "
                f"{self.dtype} (model.dtype): "
                + "; ".join(f"{url} in {reported}" for url, reported in mismatches)
                + f": restart them with --dtype {self.dtype}, or set model.dtype="
                + " or ".join(theirs)
            )  # fmt: skip
        if problems:
            raise RolloutServerError(". ".join(problems))

    def _wait_ready(self, server: _Server, timeout: float, deadline: float) -> None:
        while True:
            try:
                self._call(server, "GET", "/health", None, timeout)
                return
            except _Transient as error:
                if error.dead or time.monotonic() >= deadline:
                    raise
            time.sleep(POLL_SECONDS)

    def generate(self, request: RolloutRequest) -> RolloutResult:
        """Answer one request (``generate_many`` with one)."""
        return next(iter(self.generate_many([request])))

    def generate_many(self, requests: Iterable[RolloutRequest]) -> Iterator[RolloutResult]:
        """Answer every request, yielding each result as it completes (it carries its request).

        Raises ``RolloutServerError`` at the first request that fails for good; the requests
        not yet sent are dropped.
        """
        pending = list(requests)
        if not pending:
            return
        workers = self.server_concurrency * len(self.servers)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout-client")
        try:
            running: set[Future[RolloutResult]] = {pool.submit(self._answer, r) for r in pending}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def sync_weights(self, saved: SavedWeights) -> float:
        """Load ``saved`` on every live server and verify it; returns the seconds it took.

        ``saved`` must be a folder no server loaded before: sglang reloads a LoRA adapter only
        when its nickname or path changes (``lora/pipeline.py`` line 1147), so one folder
        reused would keep the first adapter for the whole run. A compatible server must then
        report the trainer's checksum; a real sglang server names its weights its own way, so
        there every server must report the same checksum and, once the trainer's weights
        changed since the last sync, a different one than before it.
        """
        started = time.perf_counter()
        if saved.kind == "lora":
            path = "/v1/set_lora"
            body: dict[str, Any] = {"lora_nickname": ADAPTER, "lora_path": str(saved.path)}
        else:
            path = "/update_weights_from_disk"
            body = {"model_path": str(saved.path), "target_modules": [MODULE]}
        changed = self._synced is not None and saved.checksum != self._synced
        checksums: dict[str, str] = {}
        for server in self._live():
            try:
                self._call(server, "POST", path, body, self.timeout)
                answer = self._call(server, "POST", "/get_weights_checksum",
                                    {"module_names": [MODULE]}, self.timeout)  # fmt: skip
                if server.kind is None:
                    info = json.loads(self._call(server, "GET", "/model_info", None, 30.0))
                    server.kind = info.get("server") if isinstance(info, dict) else ""
            except _Transient as error:
                raise RolloutServerError(f"{server.url}: weight sync failed: {error}") from None
            checksum = json.loads(answer).get(MODULE)
            stale = (checksum != saved.checksum if server.kind == "groupwise"
                     else changed and checksum == server.checksum)  # fmt: skip
            if stale:
                raise RolloutServerError(
                    f"{server.url}: after loading {saved.path} its {MODULE} checksum is "
                    f"{checksum} (before: {server.checksum}), the trainer's {saved.checksum}: "
                    "the load did not take"
                )
            server.checksum = checksums[server.url] = checksum
        if len(set(checksums.values())) > 1:
            raise RolloutServerError(f"servers disagree on the weights after sync: {checksums}")
        self._synced = saved.checksum
        return time.perf_counter() - started

    def replay_tolerance(self) -> ReplayTolerance:
        """The trainer's own numerics for compatible servers (they run the trainer's model
        code, in any dtype, on the same batches); bf16 kernels otherwise, as sglang's DiT
        computes by default."""
        same = all(server.kind == "groupwise" for server in self.servers)
        return SAME_NUMERICS if same else BF16_SERVER

    def release_memory(self) -> float:
        """Have every live server free its GPU memory (sglang's ``/release_memory_occupation``:
        it moves its modules to the CPU) so that the trainer can update; the seconds taken."""
        return self._memory("/release_memory_occupation")

    def resume_memory(self) -> float:
        """Have every live server take its GPU memory back before the next rollout or weight
        sync (``/resume_memory_occupation``); the seconds taken."""
        return self._memory("/resume_memory_occupation")

    def _memory(self, path: str) -> float:
        started = time.perf_counter()
        for server in self._live():
            try:
                answer = json.loads(self._call(server, "POST", path, {}, self.timeout))
            except (_Transient, ValueError) as error:
                raise RolloutServerError(f"{server.url}: {path} failed: {error}") from None
            if not (isinstance(answer, dict) and answer.get("success") is True):
                raise RolloutServerError(f"{server.url}: {path} answered {answer}")
        return time.perf_counter() - started

    def _live(self) -> list[_Server]:
        live = [server for server in self.servers if server.alive]
        if not live:
            raise RolloutServerError(
                "every rollout server is down: " + ", ".join(s.url for s in self.servers)
            )
        return live

    def _answer(self, request: RolloutRequest) -> RolloutResult:
        attempt = 0
        while True:
            server = self._acquire()
            try:
                body = self._call(server, "POST", "/rollout/generate",
                                  request_payload(request), self.timeout)  # fmt: skip
            except _Transient as error:
                self._release(server, dead=error.dead)
                attempt += 1
                if attempt > self.max_retries:
                    raise RolloutServerError(
                        f"{server.url}: {describe(request)} failed {attempt} times, last: {error}"
                    ) from None
                with self._slots:
                    self.retries += 1
                # A request that lost its server moves on at once; a busy or failing server
                # gets time to recover.
                if not error.dead:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            except RolloutServerError as error:
                self._release(server, dead=False)
                raise RolloutServerError(f"{error} ({describe(request)})") from None
            self._release(server, dead=False)
            try:
                return parse_result(unpack(body), request, self.latents)
            except ProtocolError as error:
                raise RolloutServerError(
                    f"{server.url}: malformed answer to {describe(request)}: {error}"
                ) from None

    def _acquire(self) -> _Server:
        """The live server with the fewest outstanding requests, once one has a free slot."""
        with self._slots:
            while True:
                live = self._live()
                free = [s for s in live if s.outstanding < self.server_concurrency]
                if free:
                    chosen = min(free, key=lambda s: s.outstanding)
                    chosen.outstanding += 1
                    return chosen
                self._slots.wait()

    def _release(self, server: _Server, *, dead: bool) -> None:
        with self._slots:
            server.outstanding -= 1
            if dead:
                server.alive = False
            self._slots.notify_all()

    def _call(self, server: _Server, method: str, path: str, body: Any, timeout: float) -> bytes:
        """The body of a 2xx answer; ``_Transient`` for what may pass, ``RolloutServerError``
        for a 4xx."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        call = urllib.request.Request(server.url + path, data, headers, method=method)
        try:
            with self.egress.urlopen(call, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = _detail(error)
            if error.code >= 500:
                raise _Transient(f"HTTP {error.code} on {path}: {detail}", dead=False) from None
            raise RolloutServerError(
                f"{server.url}: HTTP {error.code} on {path}: {detail}"
            ) from None
        except urllib.error.URLError as error:
            if is_refusal(error):
                # Said the same whatever the address is, so nothing about it leaks.
                raise RolloutServerError(f"{server.url}: {REFUSED}") from None
            if isinstance(error.reason, TimeoutError):
                raise _Transient(f"no answer to {path} within {timeout} s", dead=False) from None
            raise _Transient(f"cannot connect: {error.reason}", dead=True) from None
        except TimeoutError:
            raise _Transient(f"no answer to {path} within {timeout} s", dead=False) from None
        except (OSError, http.client.HTTPException) as error:
            # Reset, refused or cut off mid-answer: the server is gone.
            raise _Transient(f"connection lost on {path}: {error!r}", dead=True) from None


#: How sglang's configs (``dit_precision``) and torch spell the model dtypes.
_DTYPE_SPELLINGS = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}


def _dtype_name(reported: Any) -> str:
    """A reported dtype under its ``model.dtype`` name: ``torch.bfloat16`` and ``bf16`` are
    ``bfloat16``."""
    text = str(reported).removeprefix("torch.")
    return _DTYPE_SPELLINGS.get(text, text)


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read()
        answer = json.loads(body)
        return str(answer.get("detail") or answer.get("message") or answer)
    except (ValueError, AttributeError, OSError):
        return error.reason if isinstance(error.reason, str) else str(error)
