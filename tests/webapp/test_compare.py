"""Comparing runs: recipe differences, one prompt's groups side by side, owners only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.webapp.engine_events import rollout, store
from tests.webapp.personas import client_for, make_run
from webapp.runs.compare import recipe_differences
from webapp.runs.models import Sample

pytestmark = pytest.mark.django_db


def test_recipe_differences_list_only_what_differs() -> None:
    a = {"optimiser": {"lr": 0.001, "kl_beta": 0.0}, "run": {"seed": 1}}
    b = {"optimiser": {"lr": 0.002, "kl_beta": 0.0}, "run": {"seed": 1}}
    assert recipe_differences([a, b]) == [{"field": "optimiser.lr", "values": ["0.001", "0.002"]}]


def test_compare_curves_are_each_runs_rollouts(owner: Any, settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path
    first, second = make_run(owner, name="a"), make_run(owner, name="b")
    store(first.pk, rollout(0, 0, ((0.2, 0.4),)), rollout(1, 1, ((0.6,),)))
    store(second.pk, rollout(0, 0, ((0.9,),)))
    page = client_for(owner).get(f"/runs/compare/?ids={second.pk}&ids={first.pk}")
    curves = {
        c["id"]: [(p["step"], p["mean"]) for p in c["reward"]] for c in page.context["curves"]
    }
    assert curves == {first.pk: [(0, pytest.approx(0.3)), (1, 0.6)], second.pk: [(0, 0.9)]}


def test_compare_page(owner: Any, other: Any) -> None:
    first, second = make_run(owner, name="lr low"), make_run(owner, name="lr high")
    second.recipe["optimiser"]["lr"] = 0.01
    second.save()
    for run, reward in ((first, 0.3), (second, 0.7)):
        Sample.objects.create(
            run=run, step=0, rollout_index=0, group_index=0, prompt="a red image",
            index_in_group=0, image="x.png", thumbnail="x.t.png", reward=reward,
            components={}, advantage=0.0, seed=1,
        )  # fmt: skip
    page = client_for(owner).get(f"/runs/compare/?ids={first.pk}&ids={second.pk}")
    assert page.status_code == 200
    assert [row["field"] for row in page.context["differences"]] == ["optimiser.lr"]
    columns = page.context["columns"]
    assert [c["run"].pk for c in columns] == [first.pk, second.pk]
    assert [c["samples"][0].reward for c in columns] == [0.3, 0.7]
    # The curves come from the runs' stored rollouts: none here.
    assert [c["reward"] for c in page.context["curves"]] == [[], []]

    # Someone else's run is not comparable: with fewer than two visible runs, back to the list.
    theirs = make_run(other)
    refused = client_for(owner).get(f"/runs/compare/?ids={first.pk}&ids={theirs.pk}")
    assert refused.status_code == 302 and refused["Location"] == "/runs/"
