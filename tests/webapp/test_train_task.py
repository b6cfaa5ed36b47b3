"""`runs.train_run` in a real worker: tiny-color end to end, duplicate delivery, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from engine.overrides import apply_overrides
from engine.presets import PRESETS
from tests.recipes import TINY_COLOR_SMALL
from tests.waiting import wait_until
from tests.webapp.personas import client_for
from tests.webapp.webhooks import webhook_receiver
from tests.webapp.workers import broker, client_app, start_worker
from webapp.runs.models import Checkpoint, Event, Notification, Run, Sample

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STEPS = {**TINY_COLOR_SMALL, "max_steps": 2, "checkpoint_every": 2, "eval_every": 2}


@pytest.fixture
def worker_setup(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    settings.MEDIA_ROOT = tmp_path / "media"
    b = broker("embedded", tmp_path)
    env = {"MEDIA_ROOT": str(tmp_path / "media"), "GROUPWISE_RUNS_DIR": str(tmp_path / "runs")}
    with start_worker(b, tmp_path, extra_env=env) as worker:
        worker.wait_ready()
        yield client_app(b), worker, tmp_path


def queued_run(owner: Any, **overrides: Any) -> Run:
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, {**TWO_STEPS, **overrides})
    return Run.objects.create(
        owner=owner,
        name="task test",
        preset="tiny-color",
        recipe=recipe.to_dict(),
        max_steps=recipe.run.max_steps,
    )


def test_tiny_color_trains_end_to_end_and_a_duplicate_does_nothing(
    owner: Any, worker_setup
) -> None:
    app, worker, tmp_path = worker_setup
    run = queued_run(owner)
    with webhook_receiver() as hook:
        Run.objects.filter(pk=run.pk).update(webhook_url=hook.url)
        first = app.send_task("runs.train_run", args=[run.pk], queue="gpu")
        duplicate = app.send_task("runs.train_run", args=[run.pk], queue="gpu")
        assert first.get(timeout=600) == "finished", worker.log()
        assert duplicate.get(timeout=60) == "skipped"
        # The worker sends the end-of-run webhook as a task on the default queue.
        assert hook.arrived.wait(timeout=60), worker.log()
    assert [m["run"]["status"] for m in hook.received] == ["finished"]
    assert Notification.objects.get(run=run).delivered

    run.refresh_from_db()
    assert (run.status, run.step, run.attempts, run.error) == ("finished", 2, 1, "")
    assert run.reproducibility["packages"]["torch"]
    types = list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
    assert types[0] == "run_started" and types[-1] == "run_ended"
    assert types.count("rollout_finished") == 2 and types.count("train_step_finished") == 2
    assert "evaluation_finished" in types and "checkpoint_saved" in types
    samples = Sample.objects.filter(run=run)
    assert samples.count() == 2 * 2 * 4  # 2 rollouts x 2 prompts x G=4
    for sample in samples:
        assert (tmp_path / "media" / sample.image).is_file()
        assert (tmp_path / "media" / sample.thumbnail).is_file()
    checkpoint = Checkpoint.objects.get(run=run)
    assert checkpoint.step == 2 and Path(checkpoint.path).is_dir()
    assert Path(checkpoint.path).parent.parent == tmp_path / "runs" / str(run.pk)


def test_cancel_through_the_api_stops_within_one_phase(owner: Any, worker_setup) -> None:
    app, worker, _tmp_path = worker_setup
    run = queued_run(owner, max_steps=40, checkpoint_every=20, eval_every=20)
    result = app.send_task("runs.train_run", args=[run.pk], queue="gpu")
    wait_until(
        lambda: Event.objects.filter(run=run, type="rollout_finished").exists(),
        300,
        what="a first rollout",
        context=worker.log,
    )
    api: Client = client_for(owner)
    response = api.post(
        f"/api/runs/{run.pk}/cancel/", data=json.dumps({}), content_type="application/json"
    )
    assert response.json()["status"] == "cancelling"
    assert result.get(timeout=300) == "cancelled", worker.log()
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.step <= 2, "stopped within a phase of the cancel, not at the end"
    assert Event.objects.filter(run=run, type="run_ended").get().payload["status"] == "cancelled"
