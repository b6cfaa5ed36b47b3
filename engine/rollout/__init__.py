"""Rollouts: the request/result contract, the in-process backend and the request plan."""

from engine.rollout.backend import RolloutBackend, generate_one_by_one
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import evaluation_requests, rollout_requests
from engine.rollout.steps import ode_step, stochastic_step, velocity_at
from engine.rollout.types import PhaseTimings, RolloutRequest, RolloutResult, RolloutSample

__all__ = [
    "InProcessBackend",
    "PhaseTimings",
    "RolloutBackend",
    "RolloutRequest",
    "RolloutResult",
    "RolloutSample",
    "evaluation_requests",
    "generate_one_by_one",
    "ode_step",
    "rollout_requests",
    "stochastic_step",
    "velocity_at",
]
