"""The microgroup sweep: one recipe and its seeds at every valid M, measured side by side.

The single-prompt multi-generation checklist (docs/single-prompt-multi-generation.md) asks to
sweep ``diffusion_microgroup_size`` over 1, 2, 4, 8, 16 with everything else fixed and to judge
M by end-to-end iteration time, not generation time alone. ``sweep`` does that: for each M it
runs the same rollouts (same prompts, seeds and SDE windows, which never depend on M) with the
loop's own steps (``engine.run.steps``): scored in the background, microgroup by microgroup, and,
with ``update``, trained on from the same starting weights. Per M it reports images/s, DiT
forwards/s, peak memory, seconds per phase, the end-to-end iteration time, and how far its
samples are from those of the first M (they must agree within the batch-variance tolerance).
The report is plain data with the machine it ran on, so results from different machines can be
stored and compared.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from engine.memory.probe import MemoryProbe
from engine.models.base import FlowModel
from engine.models.loading import load_model, resolve_model_dir
from engine.models.precision import resolved_checkpointing, resolved_dtype
from engine.overrides import apply_overrides
from engine.plain import from_plain, to_plain
from engine.policy import Policy
from engine.problems import Problem, RecipeError, or_list
from engine.prompts import PromptSet, load_prompts
from engine.recipe import Recipe
from engine.rewards import Reward, build_rewards
from engine.rollout.in_process import InProcessBackend
from engine.run.health import phase_seconds
from engine.run.steps import Scoring, draw_requests, rollout_advantages, update
from engine.run.world import OneProcess
from engine.trainer import Trainer
from engine.validation import check_paths, divisors, validate

SCHEMA_VERSION = 1
#: Samples at two sizes agree when their images differ by at most this many uint8 levels and
#: their log-probs by at most this much. fp32 batch variance is ~1e-6 (one level where rounding
#: flips, log-probs within 1e-4 on the tiny model); the headroom is for GPU kernels that change
#: with the batch size.
IMAGE_TOLERANCE = 2
LOG_PROB_TOLERANCE = 1e-3

#: (rollout index, seed) -> (image, log-probs): one size's samples, to compare sizes by seed.
Samples = dict[tuple[int, int], tuple[np.ndarray, torch.Tensor]]


@dataclass(frozen=True)
class Machine:
    """Where a sweep ran, so results from different machines can be told apart."""

    #: The machine's network name.
    hostname: str
    #: Operating system and architecture (``platform.platform()``).
    platform: str
    #: Python's version.
    python: str
    #: Logical CPUs.
    cpu_count: int
    #: ``cpu`` or the CUDA device's name.
    device: str
    #: ``torch.__version__`` (names the CUDA build too).
    torch_version: str
    #: ``diffusers.__version__``.
    diffusers_version: str
    #: torch's intra-op threads, which CPU throughput depends on.
    torch_threads: int

    @classmethod
    def current(cls, device: torch.device) -> Machine:
        """This machine, computing on ``device``."""
        import diffusers

        return cls(
            hostname=platform.node(),
            platform=platform.platform(),
            python=platform.python_version(),
            cpu_count=os.cpu_count() or 0,
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            torch_version=torch.__version__,
            diffusers_version=diffusers.__version__,
            torch_threads=torch.get_num_threads(),
        )


@dataclass(frozen=True)
class SweepRow:
    """One microgroup size M, measured over the sweep's rollouts."""

    #: M, the ``diffusion_microgroup_size`` of this row.
    microgroup_size: int
    #: Samples generated over every rollout.
    images: int
    #: DiT forward calls made over every rollout.
    dit_forwards: int
    #: Generation only: images / seconds from the first request to the last image.
    images_per_second: float
    #: DiT forward calls / the same generation seconds.
    dit_forwards_per_second: float
    #: Images / end-to-end seconds (rollout, waiting for the reward, and the update if any).
    end_to_end_images_per_second: float
    #: End-to-end seconds of one iteration, averaged over the rollouts.
    iteration_seconds: float
    #: Seconds per phase and rollout: encode, denoise, decode, reward, and train with updates.
    phase_seconds: dict[str, float]
    #: The peak memory while this size ran, in bytes (see ``SweepReport.memory_source``).
    peak_memory_bytes: int
    #: That peak minus the memory in use when this size started.
    memory_growth_bytes: int
    #: Largest |difference| from the reference size's images, in uint8 levels.
    max_image_diff: int
    #: Largest |difference| from the reference size's log-probs.
    max_log_prob_diff: float
    #: Same seeds as the reference, and both differences within the report's tolerances.
    same_samples: bool
    #: The trainer's replay max |ratio - 1| over the rollouts; None without updates.
    replay_max_deviation: float | None

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready data, as in ``SweepReport.to_dict``."""
        plain: dict[str, Any] = to_plain(self)
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepRow:
        """Inverse of ``to_dict``."""
        return from_plain(cls, data)


@dataclass(frozen=True)
class SweepReport:
    """A whole sweep: its settings, the machine, one row per M and the verdict."""

    #: The swept recipe (``Recipe.to_dict()``); only its microgroup size was varied.
    recipe: dict[str, Any]
    #: The sizes swept, in order; the first is the reference the samples are compared with.
    sizes: tuple[int, ...]
    #: Rollouts run at each size.
    rollouts: int
    #: Whether each rollout was also trained on.
    update: bool
    #: How ``peak_memory_bytes`` was measured.
    memory_source: str
    #: Images of a size may differ from the reference's by this many uint8 levels.
    image_tolerance: int
    #: Log-probs may differ by this much.
    log_prob_tolerance: float
    #: Where it ran.
    machine: Machine
    #: One per size, in the order of ``sizes``.
    rows: tuple[SweepRow, ...]
    #: The sizes whose samples matched the reference.
    within_tolerance: tuple[int, ...]
    #: The size with the highest end-to-end images/s among ``within_tolerance``.
    best_size: int
    #: When the sweep finished, in seconds since the epoch.
    created: float

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready data (non-finite floats as "NaN", "Infinity", "-Infinity")."""
        return {"schema_version": SCHEMA_VERSION, **to_plain(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        """Inverse of ``to_dict``; raises ``ValueError`` for another schema version."""
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"sweep report schema_version {data.get('schema_version')!r}; "
                f"this code reads {SCHEMA_VERSION}"
            )
        return from_plain(cls, {k: v for k, v in data.items() if k != "schema_version"})


def sweep_sizes(recipe: Recipe, sizes: Sequence[int] | None, rollouts: int) -> tuple[int, ...]:
    """The sizes to sweep, ascending: ``sizes`` or every divisor of ``n_samples_per_prompt``.

    Raises ``RecipeError`` naming the recipe's problems, each size that does not divide the
    group and a ``rollouts`` below 1, all at once.
    """
    problems = validate(recipe) + check_paths(recipe)
    if problems:
        raise RecipeError(problems)
    group = recipe.layout.n_samples_per_prompt
    valid = divisors(group)
    chosen = valid if sizes is None else sorted(set(sizes))
    if not chosen:
        problems.append(Problem("sizes", f"no microgroup size given: use some of {or_list(valid)}"))
    problems += [
        Problem(
            "sizes",
            f"diffusion_microgroup_size={size} does not divide n_samples_per_prompt={group}: "
            f"use {or_list(valid)}",
        )
        for size in chosen
        if size not in valid
    ]
    if rollouts < 1:
        problems.append(Problem("rollouts", f"rollouts={rollouts}: sweep at least 1, e.g. 2"))
    if problems:
        raise RecipeError(problems)
    return tuple(chosen)


def sweep(
    recipe: Recipe,
    *,
    sizes: Sequence[int] | None = None,
    rollouts: int = 2,
    update: bool = False,
    model_dir: Path | None = None,
    on_result: Callable[[SweepRow], None] | None = None,
    device: str | None = None,
    image_tolerance: int = IMAGE_TOLERANCE,
    log_prob_tolerance: float = LOG_PROB_TOLERANCE,
) -> SweepReport:
    """Run ``recipe``'s first ``rollouts`` rollouts at each size of ``sweep_sizes`` and report.

    Without ``update`` the weights never change; with it every size starts from the same
    weights and a fresh optimizer. ``on_result`` gets each row as soon as its size is done.
    ``device`` defaults to CUDA when present. Raises ``RecipeError`` for invalid arguments.
    """
    chosen = sweep_sizes(recipe, sizes, rollouts)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(
        recipe.model.family,
        resolve_model_dir(recipe.model.path, model_dir),
        device=target,
        dtype=resolved_dtype(recipe, target.type),
    )
    policy = (
        Policy(
            model,
            recipe.model,
            keep_reference=recipe.optimiser.kl_beta > 0,
            seed=recipe.run.seed,
            gradient_checkpointing=resolved_checkpointing(recipe),
        )
        if update
        else None
    )
    start = policy.state_dict() if policy else {}
    bench = _Bench(recipe, model, load_prompts(recipe.data), build_rewards(recipe.rewards), target)
    bench.warm_up(chosen[0])
    probe = MemoryProbe(target)
    reference: Samples = {}
    rows = []
    for size in chosen:
        sized = apply_overrides(recipe, {"diffusion_microgroup_size": size})
        trainer = None
        if policy is not None:
            policy.load_state_dict(start)
            trainer = Trainer(policy, sized)
        probe.start()
        measured = bench.run(sized, rollouts, trainer)
        peak, growth = probe.stop()
        reference = reference or measured.samples
        differences = sample_differences(reference, measured.samples)
        row = SweepRow(
            microgroup_size=size,
            images=measured.images,
            dit_forwards=measured.dit_forwards,
            images_per_second=measured.images / max(measured.generation_seconds, 1e-9),
            dit_forwards_per_second=measured.dit_forwards / max(measured.generation_seconds, 1e-9),
            end_to_end_images_per_second=measured.images / max(measured.total_seconds, 1e-9),
            iteration_seconds=measured.total_seconds / rollouts,
            phase_seconds={k: v / rollouts for k, v in measured.phase_seconds.items()},
            peak_memory_bytes=peak,
            memory_growth_bytes=growth,
            max_image_diff=differences.max_image_diff,
            max_log_prob_diff=differences.max_log_prob_diff,
            same_samples=differences.same_keys
            and differences.max_image_diff <= image_tolerance
            and differences.max_log_prob_diff <= log_prob_tolerance,
            replay_max_deviation=measured.replay,
        )
        rows.append(row)
        if on_result is not None:
            on_result(row)
    within = tuple(row.microgroup_size for row in rows if row.same_samples)
    best = max(
        [row for row in rows if row.same_samples] or rows,
        key=lambda row: row.end_to_end_images_per_second,
    )
    return SweepReport(
        recipe=recipe.to_dict(),
        sizes=chosen,
        rollouts=rollouts,
        update=update,
        memory_source=probe.source,
        image_tolerance=image_tolerance,
        log_prob_tolerance=log_prob_tolerance,
        machine=Machine.current(target),
        rows=tuple(rows),
        within_tolerance=within,
        best_size=best.microgroup_size,
        created=time.time(),
    )


@dataclass
class _Measured:
    """What one size's rollouts produced and took."""

    images: int
    dit_forwards: int
    generation_seconds: float
    total_seconds: float
    phase_seconds: dict[str, float]
    samples: Samples
    replay: float | None


class _Bench:
    """Runs rollouts of a recipe with the loop's steps (``engine.run.steps``), timing each phase."""

    def __init__(
        self,
        recipe: Recipe,
        model: FlowModel,
        prompts: PromptSet,
        reward: Reward,
        device: torch.device,
    ) -> None:
        self.model, self.prompts, self.reward, self.device = model, prompts, reward, device
        self.backend = InProcessBackend(model)
        self.recipe = recipe

    def warm_up(self, size: int) -> None:
        """One untimed request, so one-time costs (kernel setup, caches) hit no size's numbers."""
        sized = apply_overrides(self.recipe, {"diffusion_microgroup_size": size})
        _prompts, requests = draw_requests(sized, self.prompts.train, 0)
        self.backend.generate(requests[0])

    def run(self, recipe: Recipe, rollouts: int, trainer: Trainer | None) -> _Measured:
        measured = _Measured(0, 0, 0.0, 0.0, {}, {}, None)
        replays: list[float] = []
        for index in range(rollouts):
            self._sync()
            started = time.perf_counter()
            _prompts, requests = draw_requests(recipe, self.prompts.train, index)
            with Scoring(self.reward) as scoring:
                results = OneProcess().generate(self.backend, requests, _go_on, scoring.submit)
                self._sync()
                generated = time.perf_counter()
                scores = scoring.scores(requests)
            scored_at = time.perf_counter()
            if trainer is not None:
                advantages = rollout_advantages(recipe, scores.scores, results)
                replay, _ = update(recipe, self.model, trainer, results, advantages.per_request)
                replays.append(replay.max_ratio_deviation if replay.finite else math.nan)
            self._sync()
            done = time.perf_counter()
            times = phase_seconds(results, reward=scores.reward_seconds, train=done - scored_at)
            for phase, seconds in times._asdict().items():
                if phase != "weight_sync" and (phase != "train" or trainer is not None):
                    measured.phase_seconds[phase] = measured.phase_seconds.get(phase, 0.0) + seconds
            measured.images += sum(len(result.samples) for result in results)
            measured.dit_forwards += sum(result.dit_forwards for result in results)
            measured.generation_seconds += generated - started
            measured.total_seconds += done - started
            for result in results:
                for sample in result.samples:
                    measured.samples[(index, sample.seed)] = (sample.image, sample.log_probs)
        if replays:
            measured.replay = math.nan if any(map(math.isnan, replays)) else max(replays)
        return measured

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _go_on() -> None:
    """A sweep is never asked to stop between requests."""


class Differences(NamedTuple):
    """How one size's samples differ from the reference size's."""

    #: Largest |difference| of an image, in uint8 levels.
    max_image_diff: int
    #: Largest |difference| of a log-prob (NaN when one side is NaN and the other not).
    max_log_prob_diff: float
    #: Whether both hold the same samples (keys) with the same shapes.
    same_keys: bool


def sample_differences(reference: Samples, samples: Samples) -> Differences:
    """Compare two sizes' samples, matched by (rollout, seed). A NaN log-prob matches a NaN:
    finiteness is the health checks' business, sameness across sizes this one's."""
    same = reference.keys() == samples.keys()
    image_diff, gaps = 0, [0.0]
    for key in reference.keys() & samples.keys():
        (image, log_probs), (other_image, other_log_probs) = reference[key], samples[key]
        if image.shape != other_image.shape or log_probs.shape != other_log_probs.shape:
            same = False
            continue
        levels = np.abs(image.astype(np.int16) - other_image.astype(np.int16))
        image_diff = max(image_diff, int(levels.max(initial=0)))
        # float64: the differences sought are near fp32's resolution.
        gap = (log_probs.double() - other_log_probs.double()).abs()
        gap = torch.where(log_probs.isnan() & other_log_probs.isnan(), 0.0, gap)
        gaps.append(float(gap.max()) if gap.numel() else 0.0)
    log_prob_diff = math.nan if any(math.isnan(g) for g in gaps) else max(gaps)
    return Differences(image_diff, log_prob_diff, same)
