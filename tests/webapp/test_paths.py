"""User input as paths: recipe paths stay under GROUPWISE_DATA_ROOTS, media inside its run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.presets import PRESETS
from engine.recipe import Recipe
from tests.webapp.personas import client_for
from tests.webapp.test_runs_pages import form_data
from webapp.runs.paths import path_problems, run_media_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def roots(settings: Any, tmp_path: Path) -> Path:
    allowed = tmp_path / "data"
    (allowed / "prompts").mkdir(parents=True)
    (allowed / "prompts" / "train.txt").write_text("a red image\n")
    (tmp_path / "secret.txt").write_text("root:x:0:0\n")
    (allowed / "escape").symlink_to(tmp_path)
    settings.GROUPWISE_DATA_ROOTS = [allowed.resolve()]
    return allowed


def recipe(**sections: dict[str, Any]) -> Recipe:
    data = PRESETS["tiny-color"].recipe.to_dict()
    for name, values in sections.items():
        data[name] = {**data[name], **values} if isinstance(data[name], dict) else values
    return Recipe.from_dict(data)


def test_paths_inside_the_roots_pass(roots: Path) -> None:
    assert path_problems(recipe(data={"dataset": str(roots / "prompts")})) == []
    assert path_problems(recipe(model={"path": str(roots / "prompts" / "..")})) == []


@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "{root}/../secret.txt", "{root}/escape/secret.txt", "../../etc", "a\0b"],
)
def test_paths_leading_out_are_problems_on_their_field(roots: Path, value: str) -> None:
    value = value.format(root=roots)
    (problem,) = path_problems(recipe(data={"dataset": value}))
    assert problem.field == "data.dataset"
    assert "GROUPWISE_DATA_ROOTS" in problem.message or "not a usable path" in problem.message
    (model,) = path_problems(recipe(model={"path": value}))
    assert model.field == "model.path"
    rewards = recipe(
        rewards=[
            {"name": "color", "weight": 1.0, "path": None},
            {"name": "ocr", "weight": 1.0, "path": value},
        ]
    )
    (reward,) = path_problems(rewards)
    assert reward.field == "rewards[1].path"


def test_the_api_and_the_form_refuse_outside_paths(owner: Any, roots: Path) -> None:
    client = client_for(owner)
    body = {"preset": "tiny-color", "overrides": {"data.dataset": "/etc/passwd"}}
    response = client.post("/api/runs/", body, content_type="application/json")
    assert response.status_code == 400
    assert "outside the directories runs may read" in response.json()["data.dataset"][0]
    page = client.post("/runs/new/", form_data(data__dataset="/etc/passwd"))
    assert "outside the directories" in " ".join(page.context["form"].errors["data__dataset"])


def test_the_presets_datasets_are_allowed_by_default(settings: Any) -> None:
    """The default roots hold the checkout's dataset/ folder, where the presets point."""
    for preset in PRESETS.values():
        assert path_problems(preset.recipe) == [], preset.name


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    folder = tmp_path / "media" / "runs" / "7"
    (folder / "rollout-1").mkdir(parents=True)
    (folder / "rollout-1" / "a.png").write_bytes(b"png")
    (tmp_path / "media" / "runs" / "8").mkdir()
    (tmp_path / "media" / "runs" / "8" / "b.png").write_bytes(b"png")
    (folder / "inside.png").symlink_to(folder / "rollout-1" / "a.png")
    (folder / "outside.png").symlink_to(tmp_path / "media" / "runs" / "8" / "b.png")
    return folder


def test_media_files_inside_the_run_folder(media: Path) -> None:
    assert run_media_file(7, "rollout-1/a.png") == (media / "rollout-1" / "a.png").resolve()
    assert run_media_file(7, "inside.png") == (media / "rollout-1" / "a.png").resolve()


@pytest.mark.parametrize(
    "path",
    [
        "../8/b.png",
        "rollout-1/../../8/b.png",
        "./rollout-1/a.png",
        "rollout-1//a.png",
        "/etc/passwd",
        "rollout-1\\a.png",
        "a\0.png",
        "outside.png",
        "rollout-1",
        "missing.png",
    ],
)
def test_media_paths_leading_out_or_to_nothing_are_refused(media: Path, path: str) -> None:
    assert run_media_file(7, path) is None
