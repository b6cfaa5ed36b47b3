"""Sweeps on the web side: launching (page and API), personas, charts, orphans, best M."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.recipes import GROUPS_OF_FOUR
from tests.webapp.personas import client_for, make_run
from webapp.core.models import WorkerHeartbeat
from webapp.runs.models import Run
from webapp.sweeps.charts import chart
from webapp.sweeps.models import Sweep
from webapp.sweeps.recovery import fail_orphaned_sweeps
from webapp.sweeps.views import parse_sizes

pytestmark = pytest.mark.django_db


def row(m: int, e2e: float, peak: int = 2**20) -> dict[str, Any]:
    return {
        "microgroup_size": m,
        "images": 8,
        "dit_forwards": 64 // m,
        "images_per_second": e2e * 2,
        "dit_forwards_per_second": 10.0,
        "end_to_end_images_per_second": e2e,
        "iteration_seconds": 8 / e2e,
        "phase_seconds": {"denoise": 1.0, "reward": 0.5},
        "peak_memory_bytes": peak,
        "memory_growth_bytes": 0,
        "max_image_diff": 0,
        "max_log_prob_diff": 0.0,
        "same_samples": True,
        "replay_max_deviation": None,
    }


def finished_sweep(owner: Any, run: Run | None = None) -> Sweep:
    rows = [row(1, 2.0), row(2, 5.0), row(4, 4.0)]
    return Sweep.objects.create(
        owner=owner,
        run=run,
        recipe=run.recipe if run else make_run(owner).recipe,
        sizes=[1, 2, 4],
        rollouts=1,
        status=Sweep.Status.FINISHED,
        rows=rows,
        report={
            "rows": rows,
            "sizes": [1, 2, 4],
            "best_size": 2,
            "within_tolerance": [1, 2, 4],
            "image_tolerance": 2,
            "log_prob_tolerance": 1e-3,
            "memory_source": "peak RSS",
            "machine": {"hostname": "box-7", "device": "cpu", "torch_version": "2.14.1"},
        },
    )


def test_parse_sizes() -> None:
    assert parse_sizes("1, 2,4  8") == [1, 2, 4, 8]
    assert parse_sizes("  ") is None
    with pytest.raises(ValueError, match="whole numbers"):
        parse_sizes("1, two")


def test_chart_scales_to_the_largest_value() -> None:
    drawn = chart([row(1, 2.0), row(2, 4.0)], "end_to_end_images_per_second", width=136, height=136)
    # pad 36: x from 36 to 100; y from 100 (zero) up to 36 (the maximum).
    assert drawn["points"] == "36.0,68.0 100.0,36.0"
    assert [d["m"] for d in drawn["dots"]] == [1, 2] and drawn["max"] == 4.0
    assert chart([], "end_to_end_images_per_second")["points"] == ""


def test_launch_from_a_run_page_validates_the_sizes(owner: Any, other: Any) -> None:
    run = make_run(owner)  # tiny-color: n_samples_per_prompt=8
    client = client_for(owner)
    page = client.post(f"/runs/{run.pk}/sweep/", {"sizes": "3", "rollouts": "1"}, follow=True)
    assert "does not divide n_samples_per_prompt=8: use 1, 2, 4 or 8" in page.content.decode()
    assert not Sweep.objects.exists()
    assert client_for(other).post(f"/runs/{run.pk}/sweep/", {"sizes": "1"}).status_code == 404

    response = client.post(f"/runs/{run.pk}/sweep/", {"sizes": "1, 2", "rollouts": "1"})
    sweep = Sweep.objects.get()
    assert response["Location"] == f"/sweeps/{sweep.pk}/"
    assert (sweep.sizes, sweep.rollouts, sweep.update, sweep.run_id) == ([1, 2], 1, False, run.pk)
    assert sweep.status == "queued"


def test_the_api_launches_and_reports(owner: Any, other: Any) -> None:
    client = client_for(owner)
    created = client.post(
        "/api/sweeps/",
        data=json.dumps({"preset": "tiny-color", "sizes": [1, 8], "rollouts": 1}),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["sizes"] == [1, 8] and created.json()["status"] == "queued"
    every = client.post(
        "/api/sweeps/",
        data=json.dumps(
            {
                "preset": "tiny-color",
                "overrides": GROUPS_OF_FOUR,
            }
        ),
        content_type="application/json",
    )
    assert every.json()["sizes"] == [1, 2, 4]

    bad = client.post(
        "/api/sweeps/",
        data=json.dumps({"preset": "tiny-color", "sizes": [5], "rollouts": 0}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "rollouts" in bad.json()
    bad = client.post(
        "/api/sweeps/",
        data=json.dumps({"preset": "tiny-color", "sizes": [5]}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "use 1, 2, 4 or 8" in bad.json()["sizes"][0]
    theirs = make_run(other)
    forbidden = client.post(
        "/api/sweeps/", data=json.dumps({"run": theirs.pk}), content_type="application/json"
    )
    assert forbidden.status_code == 400 and "no run" in forbidden.json()["run"][0]
    sweep_id = created.json()["id"]
    assert client_for(other).get(f"/api/sweeps/{sweep_id}/").status_code == 404
    assert client.get(f"/api/sweeps/{sweep_id}/").json()["best_size"] is None


def test_the_result_page_marks_the_best_size_and_launches_it(
    owner: Any, other: Any, staff: Any
) -> None:
    run = make_run(owner, status="finished", name="colours")
    sweep = finished_sweep(owner, run)
    page = client_for(owner).get(f"/sweeps/{sweep.pk}/").content.decode()
    assert page.count('<svg class="sweep-chart"') == 4
    assert "Launch a run with M=2" in page and "box-7" in page
    assert 'http-equiv="refresh"' not in page
    assert client_for(other).get(f"/sweeps/{sweep.pk}/").status_code == 404
    assert client_for(staff).get(f"/sweeps/{sweep.pk}/").status_code == 200
    assert "box-7" in client_for(owner).get("/sweeps/").content.decode()
    assert "box-7" not in client_for(other).get("/sweeps/").content.decode()

    assert client_for(other).post(f"/sweeps/{sweep.pk}/launch/").status_code == 404
    response = client_for(owner).post(f"/sweeps/{sweep.pk}/launch/")
    launched = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == f"/runs/{launched.pk}/"
    assert launched.recipe["layout"]["diffusion_microgroup_size"] == 2
    assert launched.name == "colours (M=2)" and launched.status == "queued"


def test_a_running_sweep_page_refreshes_itself(owner: Any) -> None:
    sweep = Sweep.objects.create(
        owner=owner, recipe=make_run(owner).recipe, sizes=[1, 2], status="running", rows=[row(1, 1)]
    )
    page = client_for(owner).get(f"/sweeps/{sweep.pk}/").content.decode()
    assert 'http-equiv="refresh"' in page and 'data-m="1"' in page
    assert "Launch a run" not in page


def test_a_sweep_whose_worker_stopped_beating_fails(owner: Any, settings: Any) -> None:
    settings.WORKER_LIVE_SECONDS = 30
    now = timezone.now()
    recipe = make_run(owner).recipe
    WorkerHeartbeat.objects.create(
        name="w@live", host="live-host", pid=11, started_at=now, last_seen=now
    )
    alive = Sweep.objects.create(
        owner=owner, recipe=recipe, sizes=[1], status="running", worker="live-host:11",
        started_at=now - timedelta(minutes=5),
    )  # fmt: skip
    dead = Sweep.objects.create(
        owner=owner, recipe=recipe, sizes=[1], status="running", worker="gone-host:12",
        started_at=now - timedelta(minutes=5),
    )  # fmt: skip
    fresh = Sweep.objects.create(
        owner=owner, recipe=recipe, sizes=[1], status="running", worker="gone-host:13",
        started_at=now,
    )  # fmt: skip
    assert fail_orphaned_sweeps(now) == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == "failed" and "gone-host:12 stopped sending heartbeats" in dead.error
    alive.refresh_from_db()
    fresh.refresh_from_db()
    assert alive.status == fresh.status == "running"


def test_sweep_creation_is_limited_per_user(
    owner: Any, other: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.env import Rate

    now = timezone.now()
    # One instant for the whole test, so Retry-After is exact.
    monkeypatch.setattr(timezone, "now", lambda: now)
    settings.GROUPWISE_SWEEP_CREATE_LIMIT = Rate(2, 3600, "2/hour")
    run = make_run(owner)
    # Sweeps 70 and 20 minutes old: only the second is within the hour, one slot is left.
    for minutes in (70, 20):
        old = Sweep.objects.create(owner=owner, recipe=run.recipe, sizes=[1])
        Sweep.objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=minutes))
    client = client_for(owner)
    body = json.dumps({"preset": "tiny-color", "sizes": [1], "rollouts": 1})
    assert client.post("/api/sweeps/", body, content_type="application/json").status_code == 201
    refused = client.post("/api/sweeps/", body, content_type="application/json")
    assert refused.status_code == 429
    # The 20-minute-old sweep ages out of the hour in 40 minutes.
    assert refused["Retry-After"] == "2400"
    detail = refused.json()["detail"]
    assert "2 sweeps created in the last hour: the limit is 2" in detail
    assert "GROUPWISE_SWEEP_CREATE_LIMIT=2/hour" in detail
    page = client.post(f"/runs/{run.pk}/sweep/", {"sizes": "1", "rollouts": "1"}, follow=True)
    assert "Sweep not started: 2 sweeps created in the last hour" in page.content.decode()
    assert Sweep.objects.filter(owner=owner).count() == 3
    # Another user's limit is their own.
    other_client = client_for(other)
    assert (
        other_client.post("/api/sweeps/", body, content_type="application/json").status_code == 201
    )
