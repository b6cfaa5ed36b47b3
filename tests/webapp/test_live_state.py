"""The run page's opening state: the latest of everything, as stored, for the owner only."""

from __future__ import annotations

from typing import Any

import pytest

from engine.events import Health, HealthCheck, LogLine, RunEnded, RunStarted
from tests.webapp.engine_events import evaluation, rollout, store, train
from tests.webapp.personas import client_for, make_run
from webapp.runs.live_state import LOG_LINES
from webapp.runs.models import Event

pytestmark = pytest.mark.django_db


def health(step: int, status: str) -> Health:
    return Health(
        step=step, checks=(HealthCheck(name="reward spread", status=status, message=status),)
    )  # type: ignore[arg-type]


def test_a_new_run_has_nothing_yet(owner: Any) -> None:
    run = make_run(owner)
    state = client_for(owner).get(f"/api/runs/{run.pk}/state/").json()
    assert state == {
        "run": {"status": "queued", "step": 0, "max_steps": run.max_steps, "error": ""},
        "last_seq": 0,
        "rollout": None,
        "evaluation": None,
        "evaluations": [],
        "health": None,
        "logs": [],
    }


def test_the_state_is_the_latest_of_each_and_the_last_log_lines(
    owner: Any, other: Any, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner)
    store(run.pk, RunStarted(recipe=run.recipe, layout={}))
    for step in range(3):
        store(run.pk, rollout(step, step, ((0.1 * step,),)), train(step + 1), health(step, "pass"))
    store(run.pk, evaluation(1, 0.4), evaluation(3, 0.6), health(3, "warn"))
    store(run.pk, *(LogLine(level="info", message=f"line {i}") for i in range(LOG_LINES + 5)))
    store(run.pk, RunEnded(status="finished", step=3))

    state = client_for(owner).get(f"/api/runs/{run.pk}/state/").json()
    stored = Event.objects.filter(run=run)
    assert state["last_seq"] == stored.order_by("-seq").first().seq  # type: ignore[union-attr]
    latest = stored.get(type="rollout_finished", step=2)
    assert state["rollout"] == latest.payload, "the payload as stored, image URLs and all"
    assert state["rollout"]["groups"][0]["samples"][0]["reward"] == pytest.approx(0.2)
    assert state["evaluations"] == [1, 3]
    assert state["evaluation"]["step"] == 3 and state["evaluation"]["reward_mean"] == 0.6
    assert [c["status"] for c in state["health"]["checks"]] == ["warn"]
    logs = state["logs"]
    assert len(logs) == LOG_LINES
    assert [e["payload"]["message"] for e in logs[:-1]] == [
        f"line {i}" for i in range(6, LOG_LINES + 5)
    ], "the last ones, oldest first"
    assert logs[-1]["type"] == "run_ended" and logs[-1]["payload"]["status"] == "finished"
    assert [e["seq"] for e in logs] == sorted(e["seq"] for e in logs)

    assert client_for(other).get(f"/api/runs/{run.pk}/state/").status_code == 404


def test_after_a_resume_the_state_shows_the_re_run_rollout(
    owner: Any, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner)
    store(run.pk, RunStarted(recipe=run.recipe, layout={}), rollout(0, 0, ((0.1,),)))
    store(run.pk, rollout(1, 1, ((0.2,),)), evaluation(1, 0.5))
    # Resumed from the start: the rollouts and evaluation before are superseded.
    store(run.pk, RunStarted(recipe=run.recipe, layout={}, start_step=0))
    state = client_for(owner).get(f"/api/runs/{run.pk}/state/").json()
    assert (state["rollout"], state["evaluation"], state["evaluations"]) == (None, None, [])
    store(run.pk, rollout(0, 0, ((0.7,),)))
    state = client_for(owner).get(f"/api/runs/{run.pk}/state/").json()
    assert state["rollout"]["groups"][0]["samples"][0]["reward"] == 0.7
