"""The training loop: ``run(recipe, sink, should_stop, out_dir=...)``.

Each rollout reads top to bottom: 1 draw prompts, 2 roll out in microgroups (3 scoring each
microgroup on a worker thread while the next is generated; a backend with ``generate_many`` gets
every request at once and each result is scored as it arrives), 4 advantages, 5 update and, for
a server backend, weight sync, 6 evaluate when due, 7 report, 8 checkpoint when due. Every event
goes to ``sink``. ``should_stop`` is asked between phases and between requests; it answers None
to go on, or the status to end with (``cancelled``, ``interrupted``). The loop never raises: it
returns, and emits, the ``RunEnded`` event that says how the run ended. A run whose ``out_dir``
holds a checkpoint resumes from it and continues exactly as if it had not stopped.

With a ``context`` the process is one rank of a data-parallel group of ``layout.num_gpus``
(``engine.distributed``; ``engine.ranks`` starts such a group). With ``layout.fsdp`` the ranks
shard the transformer (``engine.fsdp``), else each holds a whole copy. In process, every rank
generates its share of each round of requests and receives everyone's results
(``engine.rollout.spread``), for rollouts and evaluation alike; with servers, rank 0 alone drives
them. Rank 0 alone scores and computes advantages and hands every rank what training needs
(``on_rank_zero``); every rank encodes the prompts and trains its share in step 5. Gathering the
weights for servers and checkpoints is a collective of every rank; rank 0 alone sends and writes
them and emits the events, while the others wait. ``should_stop`` is asked on rank 0 only, and
its answer travels with the next collective, so a stop reaches every rank at the same point; a
failure in rank 0's phases ends every rank. Every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import torch

from engine import events
from engine.advantages import group_advantages
from engine.checkpoint import CheckpointState, latest_checkpoint, load_checkpoint, save_checkpoint
from engine.distributed import DistContext, on_rank_zero, rank_zero_only
from engine.fsdp import full_state, load_full_state, shard_policy
from engine.health import phase_seconds, rollout_health
from engine.layout import Layout, layout
from engine.models.base import FlowModel
from engine.models.loading import load_model, resolve_model_dir
from engine.policy import Policy
from engine.precision import resolved_checkpointing, resolved_dtype, resolved_offload
from engine.problems import RecipeError
from engine.prompts import PromptSet, draw_prompts, load_prompts
from engine.recipe import Recipe
from engine.reports import evaluation_event, in_request_order, rollout_event
from engine.rewards import Reward, RewardScorer, build_rewards
from engine.rollout.backend import RolloutBackend, replay_tolerance
from engine.rollout.in_process import InProcessBackend
from engine.rollout.latents import LatentLayout
from engine.rollout.launch import remote_backend
from engine.rollout.plan import evaluation_requests, rollout_requests
from engine.rollout.sglang import SGLangBackend
from engine.rollout.spread import generate_spread
from engine.rollout.types import RolloutRequest, RolloutResult
from engine.rollout.weights import remove_older_syncs, save_weights, sync_folder
from engine.trainer import Replay, StepMetrics, Trainer, rollout_conditionings
from engine.validation import check_paths, validate

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sink = Callable[[events.Event], None]
StopCheck = Callable[[], str | None]
Status = Literal["finished", "cancelled", "failed", "interrupted"]
#: Evaluation samples per held-out prompt (fixed seeds, ODE).
EVAL_SAMPLES_PER_PROMPT = 2
#: Where the weights servers load are written, under the run's folder.
SYNC_DIR = "rollout-weights"


class Stopped(Exception):
    """Raised inside the loop when ``should_stop`` answers; carries the status to end with."""

    def __init__(self, status: Status) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class _Run:
    """What the loop holds while it runs."""

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
    #: This rank's place in a data-parallel group; None trains in this process alone.
    context: DistContext | None = None
    #: Whether every rank generates its share in process (``engine.rollout.spread``).
    spread: bool = False
    #: Whether the backend's servers load the trained weights after each update.
    syncs: bool = False
    #: The colocated server, which frees its GPU memory while the trainer updates.
    colocated: SGLangBackend | None = None
    step: int = 0
    #: The last step checkpointed (rank 0 writes; every rank records it).
    checkpointed: int = -1


@dataclass(frozen=True)
class _Rollout:
    """Steps 1-4's outcome: what training needs, and what rank 0 reports."""

    #: The results in request order (group, then sample).
    results: list[RolloutResult]
    #: Each result's advantages [M].
    advantages: list[torch.Tensor]
    #: The rollout's prompts, rewards [P, G], zero-std groups and reward seconds, for the events.
    prompts: list[str]
    rewards: torch.Tensor
    zero_std_groups: tuple[int, ...]
    reward_seconds: float
    #: perf_counter() when the rollout started and when its last result arrived.
    started: float
    generated: float

    def for_training(self) -> _Rollout:
        """What the other ranks receive: the same, without images (they only train)."""
        blank = np.zeros((0, 0, 3), dtype=np.uint8)
        return replace(
            self,
            results=[
                replace(r, samples=tuple(replace(s, image=blank) for s in r.samples))
                for r in self.results
            ],
        )


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
                _iteration(state)
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
    # Servers are checked before the model loads: an unreachable URL fails the run at once.
    # With servers only rank 0 generates: the other ranks' in-process backend is never asked.
    main = context is None or context.is_main
    servers = backend is None and recipe.rollout.backend == "sglang"
    syncs = servers or hasattr(backend, "sync_weights")
    # In process, every rank generates (a sharded model cannot run on one rank alone).
    in_process = backend is None or isinstance(backend, InProcessBackend)
    spread = context is not None and context.world_size > 1 and in_process and not servers
    # A rank's model lives where its collectives run: its own GPU under nccl, the CPU under gloo.
    # One process trains on the host's first GPU when it has one.
    device = torch.device(
        context.device if context else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = resolved_dtype(recipe, device.type)
    server = None
    if servers and main:
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
    trainer = Trainer(policy, recipe, context)
    state = _Run(
        recipe, sink, should_stop, out_dir, model, backend or InProcessBackend(model), policy,
        trainer, prompts, build_rewards(recipe.rewards), context, spread, syncs,
        server if recipe.rollout.launch == "colocated" else None,
    )  # fmt: skip
    folder = latest_checkpoint(out_dir)
    if folder is not None:
        saved = load_checkpoint(folder, recipe.to_dict())
        load_full_state(policy, trainer.optimizer, saved.model, saved.optimizer)
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


def _iteration(state: _Run) -> None:
    rollout_index = state.step // state.recipe.layout.num_steps_per_rollout
    plan = layout(state.recipe, rollout_index)
    # 1-4; every rank gets what training needs.
    rollout = _roll_out(state, rollout_index, plan)

    # 5. Update on every rank: recompute the old log-probs, then the optimizer steps. The text
    # encoders are done until the next rollout: with offload their memory goes to training;
    # a colocated server gives the GPU's memory to the trainer meanwhile.
    server = state.colocated
    memory_seconds = _on_main(state, lambda: server.release_memory() if server else 0.0)
    update_started = time.perf_counter()
    conditionings = rollout_conditionings(state.model, rollout.results)
    if resolved_offload(state.recipe) == "cpu":
        state.model.offload_text_encoders()
    replay, metrics = state.trainer.train_rollout(
        rollout.results, conditionings, rollout.advantages
    )
    update = _Update(
        state.step, replay, metrics, update_started, time.perf_counter(), memory_seconds
    )
    state.step += len(metrics)

    # 5 (weight sync) to 8 (checkpoint).
    _after_update(state, rollout_index, plan, rollout, update)


def _roll_out(state: _Run, rollout_index: int, plan: Layout) -> _Rollout:
    """Steps 1-4 on every rank: the rollout (its images on rank 0 alone when rank 0 generated it
    alone), its rewards and advantages; rank 0 reports it."""
    if not state.spread:
        return _on_main(
            state, lambda: _roll_out_alone(state, rollout_index, plan), share=_Rollout.for_training
        )
    assert state.context is not None
    _on_main(state, lambda: _check(state))
    started = time.perf_counter()
    prompts, requests = _requests(state, rollout_index, plan)
    main = state.context.is_main
    results: list[RolloutResult] = []
    scorer = RewardScorer(state.reward) if main else None
    with scorer or nullcontext():
        # 2-3. Every rank generates its share of each round; rank 0 scores each round while the
        # next one is generated.
        for result in _generate(state, requests):
            results.append(result)
            if scorer is not None:
                _submit(scorer, result)
        generated = time.perf_counter()

        def advance() -> _Rollout:
            assert scorer is not None  # rank 0 runs it, and rank 0 has the scorer
            return _advance(
                state, rollout_index, plan, prompts, requests, results, scorer, started, generated
            )

        rollout = _on_main(
            state,
            advance,
            # The other ranks hold the results already: only the rest travels.
            share=lambda full: replace(full, results=[]),
        )
    return rollout if main else replace(rollout, results=results)


def _roll_out_alone(state: _Run, rollout_index: int, plan: Layout) -> _Rollout:
    """Steps 1-4 in this process: the rollout's samples, rewards and advantages; reports them."""
    _check(state)
    started = time.perf_counter()
    prompts, requests = _requests(state, rollout_index, plan)
    # 2-3. Roll out in microgroups; each is scored while the next ones are generated.
    arrived: list[RolloutResult] = []
    with RewardScorer(state.reward) as scorer:
        for result in _generate(state, requests):
            arrived.append(result)
            _submit(scorer, result)
        generated = time.perf_counter()
        return _advance(
            state, rollout_index, plan, prompts, requests, arrived, scorer, started, generated
        )


def _requests(
    state: _Run, rollout_index: int, plan: Layout
) -> tuple[list[str], list[RolloutRequest]]:
    """1. Draw this rollout's prompts from its seed (a resumed run draws the same ones), and
    the rollout's requests."""
    recipe = state.recipe
    prompts = draw_prompts(state.prompts.train, plan.rollout_seed, recipe.layout.rollout_batch_size)
    return prompts, rollout_requests(recipe, prompts, rollout_index)


def _submit(scorer: RewardScorer, result: RolloutResult) -> None:
    count = result.request.num_outputs
    scorer.submit(result.images, [result.request.prompt] * count, [{}] * count)


def _advance(
    state: _Run,
    rollout_index: int,
    plan: Layout,
    prompts: list[str],
    requests: Sequence[RolloutRequest],
    arrived: list[RolloutResult],
    scorer: RewardScorer,
    started: float,
    generated: float,
) -> _Rollout:
    """3 (the scores, once all arrived) and 4; reports the rollout."""
    recipe, sink = state.recipe, state.sink
    scored = scorer.results()
    results, scores, components = in_request_order(
        requests, arrived, scored.scores(), scored.components()
    )

    # 4. Advantages inside each prompt group.
    group_size = recipe.layout.n_samples_per_prompt
    rewards = torch.as_tensor(np.asarray(scores), dtype=torch.float64).reshape(-1, group_size)
    advantages = group_advantages(
        rewards,
        globalize_reward_std=recipe.optimiser.globalize_reward_std,
        adv_clip_max=recipe.optimiser.adv_clip_max,
    )
    sink(
        rollout_event(
            state.step,
            rollout_index,
            plan,
            prompts,
            results,
            rewards,
            components,
            advantages.advantages,
        )
    )
    _check(state)
    return _Rollout(
        results=results,
        advantages=_split(advantages.advantages.flatten(), results),
        prompts=prompts,
        rewards=rewards,
        zero_std_groups=advantages.zero_std_groups,
        reward_seconds=scored.reward_seconds,
        started=started,
        generated=generated,
    )


class _Update(NamedTuple):
    """Step 5's outcome on every rank."""

    #: The step the update started from.
    first_step: int
    replay: Replay
    metrics: list[StepMetrics]
    #: perf_counter() around the update.
    started: float
    finished: float
    #: Seconds the colocated server took to release its memory before the update.
    memory_seconds: float = 0.0


def _after_update(
    state: _Run,
    rollout_index: int,
    plan: Layout,
    rollout: _Rollout,
    update: _Update,
) -> None:
    """Steps 5 (its events and weight sync) to 8 on every rank, once every rank took
    ``update``'s steps; rank 0 alone reports."""
    recipe = state.recipe
    _on_main(state, lambda: _report_steps(state, rollout_index, update))
    train_seconds = update.finished - update.started
    # Weights load into memory the server has taken back.
    server = state.colocated
    resumed = _on_main(state, lambda: server.resume_memory() if server else 0.0)
    memory_seconds = update.memory_seconds + resumed
    sync_seconds = _sync_weights(state)
    _on_main(
        state, lambda: _report_health(state, rollout, update.replay, train_seconds, sync_seconds)
    )

    # 6. Evaluate when due, and at the end.
    if _due(state.step, recipe.run.eval_every, recipe.run.max_steps):
        _on_main(state, lambda: _check(state))
        _evaluate(state)

    # 7. Report where the time went.
    elapsed = update.finished - rollout.started
    throughput = events.Throughput(
        step=state.step,
        images_per_second=plan.samples_per_rollout / max(elapsed, 1e-9),
        rollout_seconds=rollout.generated - rollout.started,
        reward_seconds=rollout.reward_seconds,
        train_seconds=train_seconds,
        weight_sync_seconds=sync_seconds,
        memory_seconds=memory_seconds,
    )
    _on_main(state, lambda: state.sink(throughput))

    # 8. Checkpoint when due, and at the end.
    if _due(state.step, recipe.run.checkpoint_every, recipe.run.max_steps):
        _save(state)


def _report_steps(state: _Run, rollout_index: int, update: _Update) -> None:
    for offset, step_metrics in enumerate(update.metrics, start=1):
        state.sink(
            events.TrainStepFinished(
                step=update.first_step + offset,
                rollout_index=rollout_index,
                **step_metrics._asdict(),
            )
        )


def _report_health(
    state: _Run, rollout: _Rollout, replay: Replay, train_seconds: float, sync_seconds: float
) -> None:
    """Health: the checks that need no extra work (docs/health-checks.md)."""
    recipe = state.recipe
    state.sink(
        rollout_health(
            state.step,
            results=rollout.results,
            rewards=rollout.rewards,
            zero_std_groups=rollout.zero_std_groups,
            replay=replay,
            phase_seconds=phase_seconds(
                rollout.results,
                reward=rollout.reward_seconds,
                train=train_seconds,
                weight_sync=sync_seconds,
            ),
            prompts=rollout.prompts,
            sde_window_size=recipe.sampler.sde_window_size,
            reward_names=[spec.name for spec in recipe.rewards],
            replay_tolerance=replay_tolerance(state.backend),
        )
    )


def _on_main(state: _Run, work: Callable[[], T], share: Callable[[T], T] = lambda v: v) -> T:
    """``work`` on rank 0 (here, without a group); a stop there stops every rank."""
    return on_rank_zero(state.context, work, share=share, passes=(Stopped,))


def _check(state: _Run) -> None:
    status = state.should_stop()
    if status is not None:
        if status not in ("cancelled", "interrupted"):
            raise ValueError(f"should_stop answered {status!r}: use 'cancelled' or 'interrupted'")
        raise Stopped(status)  # type: ignore[arg-type]


def _generate(state: _Run, requests: Sequence[RolloutRequest]) -> Iterator[RolloutResult]:
    """Every request's result, in completion order when the backend runs them concurrently.

    When the ranks generate together (``state.spread``) every rank must iterate it; each gets
    every result, and a stop on rank 0 ends the iteration on every rank at the same round.
    """
    if state.spread:
        assert state.context is not None
        for round_results in generate_spread(
            state.backend, requests, state.context, lambda: _check(state), (Stopped,)
        ):
            yield from round_results
        return
    many = getattr(state.backend, "generate_many", None)
    if many is None:
        for request in requests:
            _check(state)
            yield state.backend.generate(request)
        return
    _check(state)
    for result in many(requests):
        yield result
        _check(state)


def _sync_weights(state: _Run) -> float:
    """Load the policy's weights on the rollout servers; seconds taken (0 in process).

    Every sync writes a folder of its own (a server reloads an adapter only from a new path)
    and removes the older ones once the servers loaded it. Every rank calls it: under FSDP
    every rank takes part in gathering the weights that rank 0 writes and sends.
    """
    if not state.syncs:
        return 0.0
    root = state.out_dir / SYNC_DIR
    folder = sync_folder(root, state.step)
    main = state.context is None or state.context.is_main
    sharded = state.context is not None and state.context.fsdp
    saved = save_weights(state.policy, folder, write=main) if sharded else None

    def send() -> float:
        weights = saved or save_weights(state.policy, folder)
        assert weights is not None
        seconds = float(state.backend.sync_weights(weights))  # type: ignore[attr-defined]
        remove_older_syncs(root, folder)
        return seconds

    return _on_main(state, send)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _split(flat: torch.Tensor, results: list[RolloutResult]) -> list[torch.Tensor]:
    sizes = [len(result.samples) for result in results]
    return list(torch.split(flat, sizes))


def _evaluate(state: _Run) -> None:
    """The held-out prompts as an ODE with fixed seeds, scored by the run's rewards: generated
    by every rank in process, else by rank 0; rank 0 scores and reports."""
    requests = evaluation_requests(state.recipe, state.prompts.eval, EVAL_SAMPLES_PER_PROMPT)
    if not state.spread:
        _on_main(
            state, lambda: _report_evaluation(state, requests, list(_generate(state, requests)))
        )
        return
    arrived = list(_generate(state, requests))
    _on_main(state, lambda: _report_evaluation(state, requests, arrived))


def _report_evaluation(
    state: _Run, requests: Sequence[RolloutRequest], arrived: list[RolloutResult]
) -> None:
    position = {id(request): index for index, request in enumerate(requests)}
    results = sorted(arrived, key=lambda result: position[id(result.request)])
    images = np.concatenate([result.images for result in results])
    prompts = [r.request.prompt for r in results for _ in r.samples]
    output = state.reward(images, prompts, [{}] * len(prompts))
    state.sink(evaluation_event(state.step, results, output))


def _save(state: _Run) -> None:
    """8. A checkpoint of every rank's state (gathered whole under FSDP), written by rank 0."""
    sharded = state.context is not None and state.context.fsdp
    # Gathering shards is a collective of every rank; replicas are all alike: rank 0's will do.
    gathered = full_state(state.policy, state.trainer.optimizer) if sharded else None
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

    _on_main(state, write)
    state.checkpointed = step


def _checkpoint_on_stop(state: _Run) -> None:
    """Keep the work of a stopped run when it stands on a rollout boundary not yet saved."""
    boundary = state.step % state.recipe.layout.num_steps_per_rollout == 0
    if boundary and state.step > state.checkpointed and state.step > 0:
        _save(state)


def _end(sink: Sink, status: Status, step: int, error: str | None = None) -> events.RunEnded:
    ended = events.RunEnded(status=status, step=step, error=error)
    sink(ended)
    return ended
