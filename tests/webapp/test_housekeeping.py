"""Retention, disk use, health flag, delete and archive: on real folders, through the sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.events import (
    CheckpointSaved,
    EvaluationFinished,
    Health,
    HealthCheck,
    RunStarted,
)
from tests.webapp.personas import client_for, make_run
from webapp.runs import housekeeping
from webapp.runs.models import Checkpoint, Event, Run
from webapp.runs.sink import RunSink

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def folders(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GROUPWISE_RUNS_DIR = tmp_path / "runs"
    return tmp_path


def write_checkpoint(run: Run, step: int, size: int) -> Path:
    folder = Path(housekeeping.run_folders(run.pk)[1]) / f"checkpoint-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * size)
    return folder


def stream(run: Run, events: list[Any]) -> None:
    sink = RunSink(run)
    for event in events:
        sink(event)
    sink.close()


def test_retention_keeps_the_newest_and_the_best_evaluated(
    owner: Any, folders: Path, settings: Any
) -> None:
    settings.GROUPWISE_KEEP_CHECKPOINTS = 2
    run = make_run(owner, status=Run.Status.RUNNING)
    rewards = {10: 0.3, 20: 0.9, 30: 0.4, 40: 0.5, 50: 0.1}
    events: list[Any] = [RunStarted(recipe=run.recipe, layout={}, start_step=0)]
    for step, reward in rewards.items():
        path = write_checkpoint(run, step, size=1000)
        events.append(
            EvaluationFinished(step=step, reward_mean=reward, reward_components={}, samples=())
        )
        events.append(CheckpointSaved(step=step, path=str(path)))
    stream(run, events)

    kept = sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True))
    assert kept == [20, 40, 50]  # the newest two and the best (0.9 at step 20)
    on_disk = sorted(p.name for p in housekeeping.run_folders(run.pk)[1].iterdir())
    assert on_disk == ["checkpoint-000020", "checkpoint-000040", "checkpoint-000050"]
    run.refresh_from_db()
    assert run.disk_bytes == 3 * 1000
    # The history still says every checkpoint was saved.
    assert Event.objects.filter(run=run, type="checkpoint_saved").count() == 5


def test_zero_keeps_every_checkpoint(owner: Any, folders: Path, settings: Any) -> None:
    settings.GROUPWISE_KEEP_CHECKPOINTS = 0
    run = make_run(owner, status=Run.Status.RUNNING)
    stream(
        run,
        [CheckpointSaved(step=s, path=str(write_checkpoint(run, s, 10))) for s in (1, 2, 3, 4)],
    )
    assert Checkpoint.objects.filter(run=run).count() == 4


def test_retention_never_deletes_outside_the_runs_folder(
    owner: Any, folders: Path, settings: Any
) -> None:
    settings.GROUPWISE_KEEP_CHECKPOINTS = 1
    run = make_run(owner, status=Run.Status.RUNNING)
    elsewhere = folders / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    Checkpoint.objects.create(run=run, step=1, path=str(elsewhere))
    stream(run, [CheckpointSaved(step=2, path=str(write_checkpoint(run, 2, 10)))])
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert list(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == [2]


def test_health_flag_is_the_worst_latest_status_and_shows_on_the_list(
    owner: Any, folders: Path
) -> None:
    run = make_run(owner, status=Run.Status.RUNNING, name="flagged")
    checks = (
        HealthCheck(name="replay", status="pass", message="ok", value=0.0),
        HealthCheck(name="log_probs", status="fail", message="NaN log-probs", value=1.0),
    )
    stream(run, [Health(step=1, checks=checks)])
    run.refresh_from_db()
    assert run.health == "fail"
    page = client_for(owner).get("/runs/").content.decode()
    assert "health-failing" in page and "health-fail" in page

    stream(run, [Health(step=2, checks=checks[:1])])
    run.refresh_from_db()
    assert run.health == "pass"
    assert "health-failing" not in client_for(owner).get("/runs/").content.decode()


def test_disk_use_per_run_and_in_total(owner: Any, folders: Path) -> None:
    first, second = make_run(owner, status="finished"), make_run(owner, status="finished")
    media = housekeeping.run_folders(first.pk)[0]
    media.mkdir(parents=True)
    (media / "a.png").write_bytes(b"p" * 2048)
    write_checkpoint(first, 1, size=1024)
    write_checkpoint(second, 1, size=512)
    assert housekeeping.measure_disk(first.pk) == 3072
    assert housekeeping.measure_disk(second.pk) == 512
    assert housekeeping.total_disk_bytes() == 3584
    page = client_for(owner).get("/runs/").content.decode()
    assert "3.0 KB" in page and "512 B" in page and "3.5 KB in all" in page


def test_delete_removes_rows_and_files_and_refuses_an_active_run(
    owner: Any, other: Any, folders: Path
) -> None:
    done = make_run(owner, status="finished")
    media = housekeeping.run_folders(done.pk)[0]
    media.mkdir(parents=True)
    (media / "a.png").write_bytes(b"p")
    checkpoint = write_checkpoint(done, 1, 1)

    assert client_for(other).post(f"/runs/{done.pk}/delete/").status_code == 404
    assert Run.objects.filter(pk=done.pk).exists()

    response = client_for(owner).post(f"/runs/{done.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert not Run.objects.filter(pk=done.pk).exists()
    assert not media.exists() and not checkpoint.exists()

    active = make_run(owner, status="running")
    page = client_for(owner).post(f"/runs/{active.pk}/delete/", follow=True).content.decode()
    assert "cancel it before deleting it" in page
    assert Run.objects.filter(pk=active.pk).exists()

    api = client_for(owner)
    assert api.delete(f"/api/runs/{active.pk}/").status_code == 409
    later = make_run(owner, status="failed")
    assert client_for(other).delete(f"/api/runs/{later.pk}/").status_code == 404
    assert api.delete(f"/api/runs/{later.pk}/").status_code == 204
    assert not Run.objects.filter(pk=later.pk).exists()


def test_archive_hides_from_the_list_and_restores(owner: Any, folders: Path) -> None:
    run = make_run(owner, status="finished", name="old experiment")
    client = client_for(owner)
    client.post(f"/runs/{run.pk}/archive/")
    run.refresh_from_db()
    assert run.archived
    assert "old experiment" not in client.get("/runs/").content.decode()
    assert "old experiment" in client.get("/runs/?archived=yes").content.decode()
    assert "old experiment" in client.get("/runs/?archived=all").content.decode()
    api = client.get("/api/runs/").json()
    assert [r["id"] for r in api["results"]] == []
    assert [r["id"] for r in client.get("/api/runs/?archived=all").json()["results"]] == [run.pk]

    client.post(f"/runs/{run.pk}/unarchive/")
    run.refresh_from_db()
    assert not run.archived

    active = make_run(owner, status="running")
    response = client.patch(
        f"/api/runs/{active.pk}/", data={"archived": True}, content_type="application/json"
    )
    assert response.status_code == 409 and "once it has ended" in response.json()["detail"]
