"""Rollouts: the request/result contract, the in-process and SGLang-D backends, the request plan."""

from engine.rollout.backend import RolloutBackend, generate_one_by_one
from engine.rollout.in_process import InProcessBackend
from engine.rollout.launch import build_backend, remote_backend
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
    "build_backend",
    "evaluation_requests",
    "generate_one_by_one",
    "ode_step",
    "remote_backend",
    "rollout_requests",
    "stochastic_step",
    "velocity_at",
]
