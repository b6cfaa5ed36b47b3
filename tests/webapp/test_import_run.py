"""``manage.py import_run``: a headless CLI run shows the JSONL's numbers and images in the
dashboard; a second import, a folder that is not a run and a corrupt line are refused."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from tests.webapp.personas import client_for
from webapp.runs.models import Checkpoint, Event, Run, Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def places(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GROUPWISE_RUNS_DIR = tmp_path / "runs"
    return tmp_path


def jsonl(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def import_run(folder: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_run", str(folder), *args, stdout=out)
    return out.getvalue()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_an_imported_run_has_the_jsonl_numbers_and_images(
    headless_run: Path, places: Path, owner: Any
) -> None:
    records = jsonl(headless_run)
    message = import_run(headless_run, "--owner", "owner", "--name", "from the cli")
    run = Run.objects.get()
    assert f"as run #{run.pk}" in message
    assert (run.owner, run.name, run.status, run.step) == (owner, "from the cli", "finished", 2)
    assert run.recipe == records[0]["recipe"] and run.max_steps == 2

    stored = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert stored == [(r["seq"], r["type"]) for r in records]
    for record in records:
        if record["type"] == "train_step_finished":
            payload = Event.objects.get(run=run, seq=record["seq"]).payload
            for key in ("loss", "kl", "clip_fraction", "grad_norm", "lr"):
                assert payload[key] == record[key]

    # Every sample: the JSONL's reward, advantage and seed, the very same pixels under media.
    expected = {
        (r["step"], g["group_index"], s["sample_index"]): s
        for r in records
        if r["type"] == "rollout_finished"
        for g in r["groups"]
        for s in g["samples"]
    }
    samples = list(Sample.objects.filter(run=run))
    assert len(samples) == len(expected) == 8
    for sample in samples:
        source = expected[(sample.step, sample.group_index, sample.index_in_group)]
        assert (sample.reward, sample.advantage, sample.seed) == (
            source["reward"],
            source["advantage"],
            source["seed"],
        )
        assert sample.image.startswith(f"runs/{run.pk}/rollout-")
        assert np.array_equal(
            pixels(places / "media" / sample.image), pixels(headless_run / source["image"])
        )
        assert (places / "media" / sample.thumbnail).is_file()

    # The charts' series (the metrics API) match means worked out from the JSONL.
    client = client_for(owner)
    metrics = client.get(f"/api/runs/{run.pk}/metrics/").json()
    for point in metrics["reward"]:
        rewards = [s["reward"] for (step, _g, _i), s in expected.items() if step == point["step"]]
        assert math.isclose(point["mean"], sum(rewards) / len(rewards), rel_tol=1e-12)
    (evaluation,) = [r for r in records if r["type"] == "evaluation_finished"]
    assert metrics["evaluation"][0]["reward_mean"] == evaluation["reward_mean"]

    # Checkpoints are copied next to the run's other files, where a resume looks.
    checkpoints = list(Checkpoint.objects.filter(run=run).values_list("step", "path"))
    assert [step for step, _ in checkpoints] == [1, 2]
    for step, path in checkpoints:
        assert Path(path) == places / "runs" / str(run.pk) / "checkpoints" / f"step-{step:06d}"
        assert (Path(path) / "model.safetensors").is_file()
    assert (places / "runs" / str(run.pk) / "checkpoints" / "latest").read_text() == "step-000002"

    detail = client.get(f"/runs/{run.pk}/")
    assert detail.status_code == 200 and b"from the cli" in detail.content
    gallery = client.get(f"/runs/{run.pk}/gallery/", {"step": 1})
    assert gallery.status_code == 200
    image = Sample.objects.filter(run=run, step=1).first()
    assert image is not None and f"/media/{image.thumbnail}".encode() in gallery.content
    assert client.get(f"/media/{image.image}").status_code == 200


def test_a_second_import_is_refused(headless_run: Path, places: Path, owner: Any) -> None:
    import_run(headless_run, "--owner", "owner")
    run = Run.objects.get()
    with pytest.raises(CommandError, match=rf"already imported as run #{run.pk}"):
        import_run(headless_run, "--owner", "owner")
    assert Run.objects.count() == 1


def test_not_a_run_folder(places: Path, owner: Any) -> None:
    with pytest.raises(CommandError, match=r"is not a run folder: it has no events\.jsonl"):
        import_run(places, "--owner", "owner")
    with pytest.raises(CommandError, match="is not a directory"):
        import_run(places / "nowhere", "--owner", "owner")


def test_a_corrupt_line_is_named_and_nothing_is_left(
    headless_run: Path, places: Path, owner: Any
) -> None:
    broken = places / "broken"
    shutil.copytree(headless_run, broken)
    lines = (broken / "events.jsonl").read_text().splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]
    (broken / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match=r"events\.jsonl line 5 is not a valid event"):
        import_run(broken, "--owner", "owner")
    assert not Run.objects.exists()

    # A line that reads but names an image that is not there: refused before storing anything.
    lines = [json.dumps(r) for r in jsonl(headless_run)]
    (broken / "events.jsonl").write_text("\n".join(lines) + "\n")
    (broken / "images" / "0000002-0001.png").unlink()
    with pytest.raises(CommandError, match=r"line 2 names image images/0000002-0001\.png"):
        import_run(broken, "--owner", "owner")
    assert not Run.objects.exists() and not Event.objects.exists()
    assert not (places / "media").exists() and not (places / "runs").exists()


def test_the_owner_must_be_known(headless_run: Path, places: Path, django_user_model: Any) -> None:
    with pytest.raises(CommandError, match="--owner USER"):
        import_run(headless_run)
    with pytest.raises(CommandError, match="--owner ghost: no such user"):
        import_run(headless_run, "--owner", "ghost")
    django_user_model.objects.create_superuser("admin", password="admin-pass-123")
    import_run(headless_run)
    assert Run.objects.get().owner.username == "admin"


def test_a_failure_while_storing_leaves_nothing(
    headless_run: Path, places: Path, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.runs import importing

    stored: list[int] = []

    def store_then_fail(run_id: int, seq: int, event: Any) -> Any:
        if seq == 6:
            raise OSError("disk full")
        stored.append(seq)
        return real(run_id, seq, event)

    real = importing.store_event
    monkeypatch.setattr(importing, "store_event", store_then_fail)
    with pytest.raises(OSError, match="disk full"):
        import_run(headless_run, "--owner", "owner")
    assert stored == [1, 2, 3, 4, 5]
    assert not Run.objects.exists() and not Sample.objects.exists()
    assert not any((places / "media").rglob("*.png"))
    assert not (places / "runs").exists() or not any((places / "runs").iterdir())
