"""The training loop: ``run(recipe, sink, should_stop, out_dir=...)``.

Each rollout reads top to bottom in ``_rollout_and_update``: 1 draw prompts, 2 generate the
microgroups, 3 score each while the next is generated, 4 advantages, 5 update and load the new
weights on the servers, 6 evaluate when due, 7 report where the time went, 8 checkpoint when due.
Steps 1-5 are ``engine.run.steps``' functions, which the sweep takes too. Every event goes to
``sink``. ``should_stop`` is asked between phases and between requests; it answers None to go
on, or the status to end with (``cancelled``, ``interrupted``). The loop never raises: it
returns, and emits, the ``RunEnded`` event that says how the run ended. A run whose ``out_dir``
holds a checkpoint resumes from it and continues exactly as if it had not stopped.

With a ``context`` the process is one rank of a data-parallel group of ``layout.num_gpus``
(``engine.parallel.distributed``; ``engine.run.ranks`` starts such a group); with ``layout.fsdp``
the ranks shard the transformer (``engine.parallel.fsdp``), else each holds a whole copy. What
differs between one process and a rank is ``engine.run.world``'s one object: rank 0 alone scores,
reports, writes and drives servers (``world.on_main``), in process every rank generates its share
(``world.generate``), and every rank trains its share of each step. ``should_stop`` is asked on rank
0 only; its answer travels with the next collective, so a stop reaches every rank at the same point,
and a failure in rank 0's part ends every rank. Every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import events
from engine.layout import Layout, layout
from engine.models.base import FlowModel
from engine.models.loading import load_model, resolve_model_dir
from engine.models.precision import resolved_checkpointing, resolved_dtype
from engine.parallel.distributed import DistContext, rank_zero_only
from engine.parallel.fsdp import full_state, load_full_state, shard_policy
from engine.policy import Policy
from engine.problems import RecipeError
from engine.prompts import PromptSet, load_prompts
from engine.recipe import Recipe
from engine.rewards import Reward, build_rewards
from engine.rollout.backend import (
    KeepsMemory,
    MemoryReleasing,
    RolloutBackend,
    WeightSyncing,
    replay_tolerance,
)
from engine.rollout.in_process import InProcessBackend
from engine.rollout.latents import LatentLayout
from engine.rollout.launch import remote_backend
from engine.rollout.plan import evaluation_requests
from engine.rollout.types import RolloutResult
from engine.rollout.weights import sync_folder
from engine.run.checkpoint import (
    CheckpointState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from engine.run.health import phase_seconds, rollout_health
from engine.run.reports import evaluation_event, rollout_event
from engine.run.steps import (
    RolloutAdvantages,
    Scores,
    Scoring,
    draw_requests,
    rollout_advantages,
    sync_weights,
    update,
)
from engine.run.world import Status, Stopped, World, world_for
from engine.trainer import Replay, StepMetrics, Trainer
from engine.validation import check_paths, validate

logger = logging.getLogger(__name__)

Sink = Callable[[events.Event], None]
StopCheck = Callable[[], str | None]
#: Evaluation samples per held-out prompt (fixed seeds, ODE).
EVAL_SAMPLES_PER_PROMPT = 2
#: Where the weights servers load are written, under the run's folder.
SYNC_DIR = "rollout-weights"


@dataclass
class _Run:
    """What the loop holds while it runs, and where it stands."""

    recipe: Recipe
    sink: Sink
    should_stop: StopCheck
    out_dir: Path
    model: FlowModel
    backend: RolloutBackend
    policy: Policy
    trainer: Trainer
    prompts: PromptSet
    reward: Reward
    #: One process, or this rank's place in a group (``engine.run.world``).
    world: World
    #: Whether the rollouts come from servers, which load the trained weights after each update.
    servers: bool
    #: A colocated server frees its GPU memory while the trainer updates.
    memory: MemoryReleasing
    step: int = 0
    #: The last step checkpointed (rank 0 writes; every rank records it).
    checkpointed: int = -1

    def check(self) -> None:
        """Raise ``Stopped`` when ``should_stop`` answers (asked on rank 0)."""
        status = self.should_stop()
        if status is not None:
            if status not in ("cancelled", "interrupted"):
                raise ValueError(
                    f"should_stop answered {status!r}: use 'cancelled' or 'interrupted'"
                )
            raise Stopped(status)  # type: ignore[arg-type]


def run(
    recipe: Recipe,
    sink: Sink,
    should_stop: StopCheck = lambda: None,
    *,
    out_dir: Path,
    model_dir: Path | None = None,
    backend: RolloutBackend | None = None,
    context: DistContext | None = None,
) -> events.RunEnded:
    """Train ``recipe`` to ``run.max_steps`` optimizer steps; see the module docstring.

    ``context``: this process's rank in a group of ``layout.num_gpus`` (every rank calls ``run``
    with the same arguments); None trains in this process alone, whatever ``num_gpus`` says.
    """
    sink = rank_zero_only(context, sink)
    state: _Run | None = None
    # Holds a colocated rollout server: it stops however the run ends.
    resources = ExitStack()
    try:
        with resources:
            state = _setup(
                recipe, sink, should_stop, Path(out_dir), model_dir, backend, context, resources
            )
            while state.step < recipe.run.max_steps:
                _rollout_and_update(state)
        return _end(sink, "finished", state.step)
    except Stopped as stop:
        # Every rank stops at the same point (the stop travels with a collective).
        if state is not None:
            _checkpoint_on_stop(state)
        return _end(sink, stop.status, state.step if state else 0)
    except RecipeError as error:
        return _end(sink, "failed", state.step if state else 0, str(error))
    except Exception as error:
        logger.exception("run failed")
        sink(events.LogLine(level="error", message=traceback.format_exc(limit=5)))
        return _end(sink, "failed", state.step if state else 0, f"{type(error).__name__}: {error}")


def _rollout_and_update(state: _Run) -> None:
    """One rollout and its update, steps 1-8, on every rank."""
    recipe, world, sink = state.recipe, state.world, state.sink
    rollout_index = state.step // recipe.layout.num_steps_per_rollout
    plan = layout(recipe, rollout_index)
    world.on_main(state.check)
    started = time.perf_counter()

    # 1. Draw the rollout's prompts from its seed; cut each prompt group into microgroups.
    prompts, requests = draw_requests(recipe, state.prompts.train, rollout_index)

    # 2. Generate the microgroups (in process spread over the ranks, servers driven by rank 0),
    # 3. each scored on rank 0 while the next ones are generated.
    with Scoring(state.reward) as scoring:
        results = world.generate(state.backend, requests, state.check, scoring.submit)
        generated = time.perf_counter()
        scores = world.on_main(lambda: scoring.scores(requests))

    # 4. Advantages inside each prompt group; rank 0 reports the rollout.
    advantages = rollout_advantages(recipe, scores.scores, results)
    world.on_main(
        lambda: _report_rollout(state, rollout_index, plan, prompts, results, scores, advantages)
    )

    # 5. Update on every rank: recompute the old log-probs, then the optimizer steps. A colocated
    # server gives the GPU's memory to the trainer meanwhile; then the servers load the weights.
    released = world.on_main(state.memory.release_memory)
    update_started = time.perf_counter()
    replay, metrics = update(recipe, state.model, state.trainer, results, advantages.per_request)
    updated = time.perf_counter()
    first_step, state.step = state.step, state.step + len(metrics)
    world.on_main(lambda: _report_steps(sink, first_step, rollout_index, metrics))
    resumed = world.on_main(state.memory.resume_memory)
    sync_seconds = _sync_weights(state)
    world.on_main(
        lambda: sink(
            _health(state, prompts, results, scores, advantages, replay, updated - update_started,
                    sync_seconds)
        )
    )  # fmt: skip

    # 6. Evaluate when due, and at the end; eval_every 0 never evaluates.
    if recipe.run.eval_every and _due(state.step, recipe.run.eval_every, recipe.run.max_steps):
        world.on_main(state.check)
        _evaluate(state)

    # 7. Report where the time went.
    throughput = events.Throughput(
        step=state.step,
        images_per_second=plan.samples_per_rollout / max(updated - started, 1e-9),
        rollout_seconds=generated - started,
        reward_seconds=scores.reward_seconds,
        train_seconds=updated - update_started,
        weight_sync_seconds=sync_seconds,
        memory_seconds=released + resumed,
    )
    world.on_main(lambda: sink(throughput))

    # 8. Checkpoint when due, and at the end.
    if _due(state.step, recipe.run.checkpoint_every, recipe.run.max_steps):
        _save(state)


def _setup(
    recipe: Recipe,
    sink: Sink,
    should_stop: StopCheck,
    out_dir: Path,
    model_dir: Path | None,
    backend: RolloutBackend | None,
    context: DistContext | None,
    resources: ExitStack,
) -> _Run:
    problems = validate(recipe) + check_paths(recipe)
    if problems:
        raise RecipeError(problems)
    prompts = load_prompts(recipe.data)
    directory = resolve_model_dir(recipe.model.path, model_dir)
    main = context is None or context.is_main
    servers = (
        recipe.rollout.backend == "sglang"
        if backend is None
        else isinstance(backend, WeightSyncing)
    )
    # A rank's model lives where its collectives run: its own GPU under nccl, the CPU under gloo.
    # One process trains on the host's first GPU when it has one.
    device = torch.device(
        context.device if context else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = resolved_dtype(recipe, device.type)
    # Servers are checked before the model loads: an unreachable URL fails the run at once.
    # Only rank 0 drives them: the other ranks' in-process backend is never asked.
    server = None
    if backend is None and servers and main:
        backend = server = remote_backend(recipe, directory, out_dir, resources, dtype)
    model = load_model(recipe.model.family, directory, device=device, dtype=dtype)
    if server is not None:
        # Trajectories arrive as the server keeps them (packed, float32, on the CPU).
        server.latents = LatentLayout.of(model)
    policy = Policy(
        model,
        recipe.model,
        keep_reference=recipe.optimiser.kl_beta > 0,
        seed=recipe.run.seed,
        gradient_checkpointing=resolved_checkpointing(recipe),
    )
    if context is not None and recipe.layout.fsdp:
        context = shard_policy(policy, context)
    colocated = server is not None and recipe.rollout.launch == "colocated"
    state = _Run(
        recipe, sink, should_stop, out_dir, model, backend or InProcessBackend(model), policy,
        Trainer(policy, recipe, context), prompts, build_rewards(recipe.rewards),
        world_for(context, servers=servers), servers,
        server if server is not None and colocated else KeepsMemory(),
    )  # fmt: skip
    folder = latest_checkpoint(out_dir)
    if folder is not None:
        saved = load_checkpoint(folder, recipe.to_dict())
        load_full_state(policy, state.trainer.optimizer, saved.model, saved.optimizer)
        torch.set_rng_state(saved.rng["torch"])
        state.step = state.checkpointed = saved.step
        sink(events.LogLine(level="info", message=f"resumed from {folder.name}"))
    # Servers start from the base weights (or another run's): give them this run's.
    _sync_weights(state)
    sink(
        events.RunStarted(
            recipe=recipe.to_dict(), layout=layout(recipe).to_dict(), start_step=state.step
        )
    )
    return state


def _report_rollout(
    state: _Run,
    rollout_index: int,
    plan: Layout,
    prompts: list[str],
    results: list[RolloutResult],
    scores: Scores,
    advantages: RolloutAdvantages,
) -> None:
    """4's report (rank 0): each group's samples with their rewards and advantages."""
    state.sink(
        rollout_event(
            state.step, rollout_index, plan, prompts, results, advantages.rewards,
            scores.components, advantages.advantages,
        )
    )  # fmt: skip
    state.check()


def _report_steps(
    sink: Sink, first_step: int, rollout_index: int, metrics: list[StepMetrics]
) -> None:
    for offset, step_metrics in enumerate(metrics, start=1):
        sink(
            events.TrainStepFinished(
                step=first_step + offset, rollout_index=rollout_index, **step_metrics._asdict()
            )
        )


def _health(
    state: _Run,
    prompts: list[str],
    results: list[RolloutResult],
    scores: Scores,
    advantages: RolloutAdvantages,
    replay: Replay,
    train_seconds: float,
    sync_seconds: float,
) -> events.Health:
    """Health: the checks that need no extra work (docs/health-checks.md)."""
    recipe = state.recipe
    return rollout_health(
        state.step,
        results=results,
        rewards=advantages.rewards,
        zero_std_groups=advantages.zero_std_groups,
        replay=replay,
        phase_seconds=phase_seconds(
            results, reward=scores.reward_seconds, train=train_seconds, weight_sync=sync_seconds
        ),
        prompts=prompts,
        sde_window_size=recipe.sampler.sde_window_size,
        reward_names=[spec.name for spec in recipe.rewards],
        replay_tolerance=replay_tolerance(state.backend),
    )


def _sync_weights(state: _Run) -> float:
    """5. The servers load the policy's weights (every rank calls it); seconds taken."""
    if not state.servers:
        return 0.0
    folder = sync_folder(state.out_dir / SYNC_DIR, state.step)
    return sync_weights(state.world, state.policy, state.backend, folder)


def _evaluate(state: _Run) -> None:
    """6. The held-out prompts as an ODE with fixed seeds, scored by the run's rewards: generated
    by every rank in process, else by rank 0; rank 0 scores and reports."""
    requests = evaluation_requests(state.recipe, state.prompts.eval, EVAL_SAMPLES_PER_PROMPT)
    results = state.world.generate(
        state.backend, requests, state.check, lambda _result: None, every_rank=False
    )
    state.world.on_main(lambda: _report_evaluation(state, results))


def _report_evaluation(state: _Run, results: Sequence[RolloutResult]) -> None:
    images = np.concatenate([result.images for result in results])
    prompts = [r.request.prompt for r in results for _ in r.samples]
    output = state.reward(images, prompts, [{}] * len(prompts))
    state.sink(evaluation_event(state.step, list(results), output))


def _save(state: _Run) -> None:
    """8. A checkpoint of every rank's state (gathered whole under FSDP), written by rank 0."""
    # Gathering shards is a collective of every rank; replicas are all alike: rank 0's will do.
    gathered = full_state(state.policy, state.trainer.optimizer) if state.world.sharded else None
    step = state.step

    def write() -> None:
        model, optim = gathered or (
            state.policy.state_dict(),
            state.trainer.optimizer.state_dict(),
        )
        folder = save_checkpoint(
            state.out_dir,
            CheckpointState(
                step=step,
                recipe=state.recipe.to_dict(),
                model=model,
                optimizer=optim,
                rng={"torch": torch.get_rng_state()},
            ),
        )
        state.sink(events.CheckpointSaved(step=step, path=str(folder)))

    state.world.on_main(write)
    state.checkpointed = step


def _checkpoint_on_stop(state: _Run) -> None:
    """Keep the work of a stopped run when it stands on a rollout boundary not yet saved."""
    boundary = state.step % state.recipe.layout.num_steps_per_rollout == 0
    if boundary and state.step > state.checkpointed and state.step > 0:
        _save(state)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _end(sink: Sink, status: Status, step: int, error: str | None = None) -> events.RunEnded:
    ended = events.RunEnded(status=status, step=step, error=error)
    sink(ended)
    return ended
