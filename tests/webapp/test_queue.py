"""The queue: claims under the per-user limit, the queue page and API, and two real workers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from engine.overrides import apply_overrides
from engine.presets import PRESETS
from tests.recipes import TINY_COLOR_QUICK
from tests.waiting import wait_until
from tests.webapp.personas import client_for, make_run
from tests.webapp.workers import broker, client_app, start_worker
from webapp.runs import queue
from webapp.runs.models import Run


@pytest.mark.django_db
def test_claim_holds_a_run_while_the_owner_is_at_the_limit(
    owner: Any, other: Any, settings: Any
) -> None:
    settings.GROUPWISE_MAX_RUNNING_PER_USER = 1
    running = make_run(owner, status=Run.Status.RUNNING)
    waiting = make_run(owner)
    theirs = make_run(other)
    assert queue.claim_run(waiting.pk) == "held"
    assert queue.claim_run(theirs.pk) == "claimed"
    waiting.refresh_from_db()
    assert waiting.status == "queued" and waiting.attempts == 0

    Run.objects.filter(pk=running.pk).update(status=Run.Status.FINISHED)
    assert queue.next_held_run(owner.pk) == waiting.pk
    assert queue.claim_run(waiting.pk) == "claimed"
    assert queue.claim_run(waiting.pk) == "not_queued"  # a duplicate delivery
    waiting.refresh_from_db()
    assert (waiting.status, waiting.attempts) == ("running", 1)
    assert waiting.reproducibility["host"] == socket.gethostname()
    # Claimed outside a worker (no node name to record), the run records the host.
    assert waiting.worker == socket.gethostname()


@pytest.mark.django_db
def test_no_limit_claims_everything(owner: Any, settings: Any) -> None:
    settings.GROUPWISE_MAX_RUNNING_PER_USER = 0
    make_run(owner, status=Run.Status.RUNNING)
    assert queue.claim_run(make_run(owner).pk) == "claimed"


@pytest.mark.django_db
def test_queue_lists_places_hosts_and_hides_other_users_runs(
    owner: Any, other: Any, staff: Any, settings: Any
) -> None:
    settings.GROUPWISE_MAX_RUNNING_PER_USER = 1
    now = timezone.now()
    running = make_run(owner, status=Run.Status.RUNNING, name="mine running")
    Run.objects.filter(pk=running.pk).update(
        worker="gpu-host-1", reproducibility={"device": "cuda: H100 x8"}, started_at=now
    )
    first = make_run(other, name="their secret")
    second = make_run(owner, name="mine waiting")
    Run.objects.filter(pk=first.pk).update(queued_at=now)
    Run.objects.filter(pk=second.pk).update(queued_at=now + timezone.timedelta(seconds=1))

    api = client_for(owner).get("/api/queue/").json()
    assert api == [
        {
            "position": None,
            "id": running.pk,
            "name": "mine running",
            "status": "running",
            "host": "gpu-host-1",
            "device": "cuda: H100 x8",
            "waiting_for": "",
        },
        {
            "position": 1,
            "id": None,
            "name": None,
            "status": "queued",
            "host": "",
            "device": None,
            "waiting_for": "",
        },
        {
            "position": 2,
            "id": second.pk,
            "name": "mine waiting",
            "status": "queued",
            "host": "",
            "device": None,
            "waiting_for": "its owner already runs 1 run(s), the per-user limit",
        },
    ]
    page = client_for(owner).get("/runs/queue/").content.decode()
    assert "their secret" not in page and "another user's run" in page
    assert "gpu-host-1" in page and "cuda: H100 x8" in page and "mine waiting" in page
    assert "their secret" in client_for(staff).get("/runs/queue/").content.decode()
    anonymous = client_for(owner)
    anonymous.logout()
    assert anonymous.get("/runs/queue/").status_code == 302
    assert anonymous.get("/api/queue/").status_code in (401, 403)


@pytest.mark.production
@pytest.mark.django_db(transaction=True)
def test_the_per_user_limit_holds_with_two_workers(
    owner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, two runs of one user, limit 1: never both running, both finish."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    recipe = apply_overrides(PRESETS["tiny-color"].recipe, TINY_COLOR_QUICK).to_dict()
    runs = [
        Run.objects.create(
            owner=owner, name=f"limited {i}", recipe=recipe, max_steps=2, queued_at=timezone.now()
        )
        for i in range(2)
    ]
    b = broker("redis" if _on_redis() else "embedded", tmp_path)
    env = {
        "MEDIA_ROOT": str(tmp_path / "media"),
        "GROUPWISE_RUNS_DIR": str(tmp_path / "runs"),
        "GROUPWISE_MAX_RUNNING_PER_USER": "1",
        "GROUPWISE_LIMIT_RETRY_SECONDS": "1",
    }
    with (
        start_worker(b, tmp_path, extra_env=env) as first,
        start_worker(b, tmp_path, extra_env=env) as second,
    ):
        first.wait_ready()
        second.wait_ready()
        app = client_app(b)
        for run in runs:
            app.send_task("runs.train_run", args=[run.pk], queue="gpu")
        most_running = 0

        def both_finished() -> bool:
            """Also counts the runs running at each look, and fails at once on a failed one."""
            nonlocal most_running
            if Run.objects.filter(pk__in=[r.pk for r in runs], status="finished").count() >= 2:
                return True
            running = Run.objects.filter(owner=owner, status="running").count()
            most_running = max(most_running, running)
            failed = Run.objects.filter(pk__in=[r.pk for r in runs], status="failed")
            assert not failed.exists(), failed.first().error if failed.first() else ""
            return False

        wait_until(
            both_finished,
            600,
            what="both runs to finish",
            context=lambda: first.log() + second.log(),
        )
    assert most_running <= 1
    done = sorted(Run.objects.filter(pk__in=[r.pk for r in runs]), key=lambda r: r.started_at)
    assert done[0].finished_at <= done[1].started_at, "the second started before the first ended"
    assert [r.attempts for r in done] == [1, 1]


def _on_redis() -> bool:
    import os

    return os.environ.get("REDIS_URL", "").startswith("redis")
