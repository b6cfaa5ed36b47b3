"""The gallery: every step on the slider, filters, search, best/worst, pagination, evolution."""

from __future__ import annotations

from typing import Any

import pytest

from engine.events import CheckpointSaved, RunStarted
from tests.webapp.engine_events import rollout, store
from tests.webapp.personas import client_for, make_run
from webapp.runs import views
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def fill(run: Run, steps: int, prompts: tuple[str, ...], group_size: int) -> None:
    """``steps`` rollouts stored as the sink stores them: sample i of every group has reward
    step / 10 + i / 100."""
    for step in range(steps):
        rewards = [[step / 10 + i / 100 for i in range(group_size)] for _ in prompts]
        store(run.pk, rollout(step, step, rewards, prompts))


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path


def test_slider_covers_every_step_and_defaults_to_the_latest(owner: Any) -> None:
    run = make_run(owner)
    fill(run, steps=30, prompts=("a red image", "a blue image"), group_size=2)
    page = client_for(owner).get(f"/runs/{run.pk}/gallery/")
    assert page.status_code == 200
    assert page.context["steps"] == list(range(30)), "no cap on steps"
    assert page.context["step"] == 29
    assert {s.step for s in page.context["samples"]} == {29}


def test_filters_search_order_and_pages(owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "GALLERY_PAGE", 3)
    run = make_run(owner)
    fill(run, steps=2, prompts=("a red image", "a blue image"), group_size=4)
    client = client_for(owner)
    red = client.get(f"/runs/{run.pk}/gallery/?step=0&prompt=a red image").context
    assert {s.prompt for s in red["samples"]} == {"a red image"}
    assert red["page_obj"].paginator.count == 4 and len(red["samples"]) == 3
    second = client.get(f"/runs/{run.pk}/gallery/?step=0&prompt=a red image&page=2").context
    assert len(second["samples"]) == 1
    search = client.get(f"/runs/{run.pk}/gallery/?step=1&q=BLUE").context
    assert search["page_obj"].paginator.count == 4
    best = client.get(f"/runs/{run.pk}/gallery/?step=1&order=best").context["samples"]
    assert [s.reward for s in best] == sorted((s.reward for s in best), reverse=True)
    worst = client.get(f"/runs/{run.pk}/gallery/?step=1&order=worst").context["samples"]
    assert worst[0].reward == pytest.approx(0.1)


def test_evolution_strip_shows_the_best_sample_of_each_step(owner: Any) -> None:
    run = make_run(owner)
    fill(run, steps=5, prompts=("a red image", "a blue image"), group_size=3)
    strip = (
        client_for(owner)
        .get(f"/runs/{run.pk}/gallery/?prompt=a blue image&view=evolution")
        .context["samples"]
    )
    assert [s.step for s in strip] == [0, 1, 2, 3, 4]
    assert all(s.index_in_group == 2 and s.prompt == "a blue image" for s in strip)


def test_superseded_samples_are_not_shown(owner: Any) -> None:
    run = make_run(owner)
    fill(run, steps=1, prompts=("p",), group_size=2)
    store(run.pk, CheckpointSaved(step=1, path="c1"), rollout(1, 1, [[0.1, 0.11]], ("p",)))
    # A resume from the checkpoint of step 1 supersedes the rollout of step 1.
    store(run.pk, RunStarted(recipe=run.recipe, layout={}, start_step=1))
    page = client_for(owner).get(f"/runs/{run.pk}/gallery/").context
    assert page["steps"] == [0]
    assert {s.step for s in page["samples"]} == {0}
    assert page["prompts"] == ["p"]


def test_gallery_is_for_the_owner(owner: Any, other: Any) -> None:
    run = make_run(owner)
    assert client_for(other).get(f"/runs/{run.pk}/gallery/").status_code == 404
    assert client_for(owner).get(f"/runs/{run.pk}/gallery/?step=x").status_code == 200
