"""Helpers for the persona tests (the owner / other / staff fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from django.test import Client

from engine.presets import PRESETS
from webapp.runs.models import Run


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_run(owner: Any, *, status: str = Run.Status.QUEUED, name: str = "demo") -> Run:
    recipe = PRESETS["tiny-color"].recipe
    return Run.objects.create(
        owner=owner,
        name=name,
        preset="tiny-color",
        recipe=recipe.to_dict(),
        max_steps=recipe.run.max_steps,
        status=status,
    )
