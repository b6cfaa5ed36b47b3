"""Exports on the web: personas on every download, the numbers and files they hold, and the
weights round trip (the downloaded model redraws the run's evaluation images)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from PIL import Image

from engine.models.loading import load_model
from engine.recipe import Recipe
from engine.rollout.in_process import InProcessBackend
from engine.rollout.plan import evaluation_requests
from engine.run.loop import EVAL_SAMPLES_PER_PROMPT
from tests.webapp.personas import client_for, make_run
from webapp.runs.importing import import_run
from webapp.runs.models import Run, Sample

pytestmark = pytest.mark.django_db

PAGES = ("metrics.csv", "metrics.json", "samples.zip", "weights.zip")
API = ("export", "export/metrics", "export/samples", "export/weights")


@pytest.fixture
def run(headless_run: Path, settings: Any, tmp_path: Path, owner: Any) -> Run:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GROUPWISE_RUNS_DIR = tmp_path / "runs"
    return import_run(headless_run, owner)


def jsonl(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_personas_on_every_export_endpoint(run: Run, other: Any, staff: Any) -> None:
    urls = [f"/runs/{run.pk}/export/{page}" for page in PAGES]
    api = [f"/api/runs/{run.pk}/{path}/" for path in API]
    owner_client, other_client, staff_client = (
        client_for(user) for user in (run.owner, other, staff)
    )
    for url in urls + api:
        assert owner_client.get(url).status_code == 200, url
        assert staff_client.get(url).status_code == 200, url
        assert other_client.get(url).status_code == 404, url
    for url in urls:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    for url in api:
        assert Client().get(url).status_code == 401


def test_metrics_hold_the_jsonl_numbers(run: Run, headless_run: Path) -> None:
    records = jsonl(headless_run)
    train = {r["step"]: r for r in records if r["type"] == "train_step_finished"}
    rollouts = {r["rollout_index"]: r for r in records if r["type"] == "rollout_finished"}
    (evaluation,) = [r for r in records if r["type"] == "evaluation_finished"]
    client = client_for(run.owner)

    page = client.get(f"/runs/{run.pk}/export/metrics.csv")
    assert page["Content-Type"] == "text/csv"
    assert f"run-{run.pk}-metrics.csv" in page["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(page).decode())))
    assert [int(row["step"]) for row in rows] == [1, 2]
    for row in rows:
        source = train[int(row["step"])]
        for key in ("loss", "kl", "clip_fraction", "grad_norm", "lr"):
            assert float(row[key]) == source[key]
        rewards = [
            s["reward"] for g in rollouts[source["rollout_index"]]["groups"] for s in g["samples"]
        ]
        mean = sum(rewards) / len(rewards)
        std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
        assert float(row["reward_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["reward_std"]) == pytest.approx(std, rel=1e-12)
    assert rows[0]["eval_reward_mean"] == ""
    assert float(rows[1]["eval_reward_mean"]) == evaluation["reward_mean"]

    as_json = json.loads(body(client.get(f"/runs/{run.pk}/export/metrics.json")))
    api_json = client.get(f"/api/runs/{run.pk}/export/metrics/").json()
    assert as_json == api_json and len(api_json) == 2
    assert api_json[1]["loss"] == train[2]["loss"]
    api_csv = body(client.get(f"/api/runs/{run.pk}/export/metrics/", {"format": "csv"}))
    assert api_csv == body(client.get(f"/runs/{run.pk}/export/metrics.csv"))
    accepted = client.get(f"/api/runs/{run.pk}/export/metrics/", HTTP_ACCEPT="text/csv")
    assert body(accepted) == api_csv


def test_samples_zip_has_a_manifest_and_every_image(run: Run, settings: Any) -> None:
    client = client_for(run.owner)
    response = client.get(f"/runs/{run.pk}/export/samples.zip")
    assert response["Content-Type"] == "application/zip" and response.streaming
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    samples = list(Sample.objects.filter(run=run).order_by("step", "group_index", "index_in_group"))
    assert len(rows) == len(samples) == 8
    for row, sample in zip(rows, samples, strict=True):
        assert (int(row["step"]), row["prompt"], int(row["seed"])) == (
            sample.step,
            sample.prompt,
            sample.seed,
        )
        assert (float(row["reward"]), float(row["advantage"])) == (sample.reward, sample.advantage)
        assert archive.read(row["file"]) == (Path(settings.MEDIA_ROOT) / sample.image).read_bytes()

    one_step = client.get(f"/api/runs/{run.pk}/export/samples/", {"step": 1})
    names = zipfile.ZipFile(io.BytesIO(body(one_step))).namelist()
    assert len(names) == 5 and all(n.startswith("images/step-000001/") for n in names[1:])
    assert client.get(f"/api/runs/{run.pk}/export/samples/", {"step": "x"}).status_code == 400


def test_downloaded_weights_redraw_the_runs_evaluation(run: Run, settings: Any, tmp_path: Path):
    client = client_for(run.owner)
    summary = client.get(f"/api/runs/{run.pk}/export/").json()
    assert summary["checkpoints"] == [2, 1]
    assert f"FOLDER = 'run-{run.pk}-step-000002'" in summary["snippet"]
    page = client.get(f"/runs/{run.pk}/")
    assert summary["snippet"].splitlines()[0].encode() in page.content
    assert f"/runs/{run.pk}/export/weights.zip".encode() in page.content

    response = client.get(summary["links"]["weights"])
    assert f"run-{run.pk}-step-000002.zip" in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(body(response))) as archive:
        archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / f"run-{run.pk}-step-000002"
    assert summary["snippet"] in (folder / "README.md").read_text()

    recipe = Recipe.from_dict(run.recipe)
    requests = evaluation_requests(recipe, recipe.data.eval_prompts, EVAL_SAMPLES_PER_PROMPT)
    backend = InProcessBackend(load_model("tiny", folder / "model"))
    drawn = np.concatenate([backend.generate(request).images for request in requests])
    evaluation = run.events.get(type="evaluation_finished").payload
    media = Path(settings.MEDIA_ROOT)
    stored = [
        np.asarray(Image.open(media / s["image"].removeprefix(settings.MEDIA_URL)))
        for s in evaluation["samples"]
    ]
    assert np.array_equal(drawn, np.stack(stored))

    older = client.get(f"/runs/{run.pk}/export/weights.zip", {"step": 1})
    assert f"run-{run.pk}-step-000001.zip" in older["Content-Disposition"]
    body(older)
    assert client.get(f"/runs/{run.pk}/export/weights.zip", {"step": 7}).status_code == 404


def test_a_run_without_checkpoints_says_so(owner: Any) -> None:
    run = make_run(owner)
    client = client_for(owner)
    page = client.get(f"/runs/{run.pk}/")
    assert b"once the run has saved a checkpoint" in page.content
    response = client.get(f"/api/runs/{run.pk}/export/weights/")
    assert response.status_code == 404 and "has no checkpoint" in response.json()["detail"]
    assert client.get(f"/api/runs/{run.pk}/export/").json() == {
        "checkpoints": [],
        "snippet": "",
        "links": {
            "metrics": f"/api/runs/{run.pk}/export/metrics/",
            "samples": f"/api/runs/{run.pk}/export/samples/",
            "weights": f"/api/runs/{run.pk}/export/weights/",
        },
    }
    assert client.get(f"/api/runs/{run.pk}/export/metrics/").json() == []


def test_a_deleted_checkpoint_folder_is_a_404_with_the_reason(run: Run) -> None:
    checkpoint = run.checkpoints.get(step=2)
    for path in Path(checkpoint.path).iterdir():
        path.unlink()
    Path(checkpoint.path).rmdir()
    response = client_for(run.owner).get(f"/api/runs/{run.pk}/export/weights/")
    assert response.status_code == 404 and "no readable meta.json" in response.json()["detail"]
