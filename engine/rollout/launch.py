"""The rollout backend a recipe asks for (``rollout.backend``, ``rollout.launch``).

``in_process`` generates with the run's model; ``sglang`` talks to servers: the ones
``server_urls`` names (external), or one the worker starts for the run's model (colocated, stopped
with the ``ExitStack`` it is entered on). Servers are checked before the caller does any GPU work.

The colocated server's command is the worker host's to set (``GROUPWISE_ROLLOUT_SERVER_COMMAND``),
never a recipe's: a recipe is written by whoever submits a run, and the command runs as the worker.
External servers are reached under the egress policy (``engine.net.egress``); a colocated one on the
worker's own loopback is not a user's URL.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import torch

from engine.models.base import FlowModel
from engine.models.precision import dtype_name
from engine.net.egress import EgressPolicy
from engine.recipe import Recipe
from engine.rollout.backend import RolloutBackend
from engine.rollout.colocated import ColocatedServer
from engine.rollout.in_process import InProcessBackend
from engine.rollout.sglang import SGLangBackend

#: The worker host's setting that holds the colocated server's command.
SERVER_COMMAND_SETTING = "GROUPWISE_ROLLOUT_SERVER_COMMAND"
#: What it runs when unset: sglang's own server.
DEFAULT_SERVER_COMMAND = "sglang serve"


def server_command() -> str:
    """The colocated server's command, from the worker's environment."""
    return os.environ.get(SERVER_COMMAND_SETTING, "").strip() or DEFAULT_SERVER_COMMAND


def remote_backend(
    recipe: Recipe,
    model_dir: Path | None,
    log_dir: Path,
    resources: ExitStack,
    dtype: torch.dtype,
) -> SGLangBackend:
    """The client of the recipe's servers, each answering ``/health`` and serving in ``dtype``
    (the trainer's, ``resolved_dtype``) when it says; raises ``RolloutServerError`` naming any
    that does not, or ``ServerStartError`` when a colocated server does not start."""
    rollout = recipe.rollout
    urls, egress = list(rollout.server_urls), None
    if rollout.launch == "colocated":
        # It holds its own copy of the model on the trainer's GPUs whenever it is resumed: the
        # memory plan's "colocated server" item (docs/sglang.md, colocated mode).
        server = resources.enter_context(
            ColocatedServer(
                server_command(),
                "tiny" if model_dir is None else str(model_dir),
                log_path=log_dir / "rollout-server.log",
                startup_timeout=rollout.startup_timeout,
            )
        )
        urls, egress = [server.url], EgressPolicy.loopback()
    backend = SGLangBackend(
        urls,
        server_concurrency=rollout.server_concurrency,
        timeout=rollout.request_timeout,
        max_retries=rollout.max_retries,
        egress=egress,
        dtype=dtype_name(dtype),
    )
    # A colocated server was waited on already; an external one may still be warming up.
    backend.check_servers(startup_timeout=rollout.startup_timeout)
    return backend


def build_backend(
    recipe: Recipe,
    model: FlowModel,
    *,
    model_dir: Path | None = None,
    log_dir: Path = Path("."),
    resources: ExitStack,
) -> RolloutBackend:
    """The backend ``recipe.rollout`` names; a colocated server lives as long as ``resources``."""
    if recipe.rollout.backend == "sglang":
        return remote_backend(recipe, model_dir, log_dir, resources, model.dtype)
    return InProcessBackend(model)
