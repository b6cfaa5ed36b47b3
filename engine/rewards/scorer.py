"""Scoring in the background: microgroup k is scored while microgroup k+1 is generated.

The loop hands each finished microgroup to ``RewardScorer.submit`` and goes on sampling; one
worker thread scores the batches in submission order. At the end of the rollout ``results()``
waits for what is left and reports, beside the outputs, the seconds the reward ran and the
seconds the loop had to wait: their difference is reward time hidden behind rollout.

One thread is enough and keeps a reward's model from being called concurrently (easyocr and most
torch models are not thread-safe); torch and easyocr release the GIL while they compute, so the
thread overlaps with generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from engine.rewards.base import Images, Reward, RewardOutput, check_batch


@dataclass(frozen=True)
class ScoredBatch:
    """One submitted batch and its scores."""

    #: Position among the batches submitted since the last ``results()``, from 0.
    index: int
    #: The reward's output for the batch.
    output: RewardOutput
    #: Wall-clock seconds the reward took on this batch.
    seconds: float


@dataclass(frozen=True)
class ScoredRollout:
    """Everything ``results()`` collected: the batches in submission order and the timings."""

    #: The scored batches, in the order they were submitted.
    batches: tuple[ScoredBatch, ...]
    #: Seconds the reward ran, summed over the batches (the throughput event's reward time).
    reward_seconds: float
    #: Seconds the caller spent blocked in ``results()`` waiting for scores.
    wait_seconds: float

    @property
    def hidden_fraction(self) -> float:
        """Share of reward time that overlapped other work: 1 - wait / reward (1 when no time)."""
        if self.reward_seconds <= 0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.wait_seconds / self.reward_seconds))

    def scores(self) -> np.ndarray:
        """All scores, batches concatenated in submission order."""
        return np.concatenate([b.output.scores for b in self.batches] or [np.zeros(0)])

    def components(self) -> dict[str, np.ndarray]:
        """Each component, batches concatenated; a component every batch has."""
        if not self.batches:
            return {}
        names = set.intersection(*(set(b.output.components) for b in self.batches))
        return {
            name: np.concatenate([b.output.components[name] for b in self.batches])
            for name in sorted(names)
        }


class RewardScorer:
    """Scores batches with ``reward`` on a background thread.

    ``submit`` returns at once with a future of the ``ScoredBatch``; ``results`` waits for every
    batch submitted since the previous call and returns them with their timings, raising the
    first batch's error if one failed (the remaining batches are still awaited, so none is left
    running). Use as a context manager, or call ``close``.
    """

    def __init__(self, reward: Reward) -> None:
        self.reward = reward
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")
        self._pending: list[Future[ScoredBatch]] = []
        self._lock = threading.Lock()

    def submit(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> Future[ScoredBatch]:
        """Queue a batch; the arrays are copied, so the caller may reuse its buffers."""
        check_batch(images, prompts, metadata)
        batch = (np.array(images, copy=True), tuple(prompts), tuple(dict(m) for m in metadata))
        with self._lock:
            future = self._pool.submit(self._score, len(self._pending), *batch)
            self._pending.append(future)
        return future

    def results(self) -> ScoredRollout:
        """Wait for the batches submitted since the last call; see the class docstring."""
        with self._lock:
            pending, self._pending = self._pending, []
        start = time.perf_counter()
        errors = [f.exception() for f in pending]
        waited = time.perf_counter() - start
        for error in errors:
            if error is not None:
                raise error
        batches = tuple(f.result() for f in pending)
        return ScoredRollout(batches, sum(b.seconds for b in batches), waited)

    def close(self, cancel: bool = False) -> None:
        """Stop the thread after the queued batches, or after the running one if ``cancel``."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A loop leaving with an error has no use for the scores still queued.
        self.close(cancel=error is not None)

    def _score(
        self,
        index: int,
        images: Images,
        prompts: tuple[str, ...],
        metadata: tuple[dict[str, Any], ...],
    ) -> ScoredBatch:
        start = time.perf_counter()
        output = self.reward(images, prompts, metadata)
        return ScoredBatch(index, output, time.perf_counter() - start)
