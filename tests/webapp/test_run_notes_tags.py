"""Notes, tags and notification settings: the run page's form, the API, and search."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.webapp.personas import client_for, make_run
from webapp.runs import services
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("given", "tags"),
    [
        ("OCR, baseline  lr-sweep", ["ocr", "baseline", "lr-sweep"]),
        (["a", "A", "b"], ["a", "b"]),
        ("", []),
        ("v1.2 team:vision", ["v1.2", "team:vision"]),
    ],
)
def test_parse_tags(given: Any, tags: list[str]) -> None:
    assert services.parse_tags(given) == tags


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ok bad/tag", "'bad/tag' is not a tag"),
        ([1, 2], "give a list of tags"),
        (" ".join(f"t{i}" for i in range(21)), "21 tags: use at most 20"),
        ("x" * 51, "is not a tag"),
    ],
)
def test_bad_tags_are_named(given: Any, message: str) -> None:
    with pytest.raises(services.SettingsError, match=message):
        services.parse_tags(given)


def test_the_run_page_saves_notes_tags_and_notifications(owner: Any, other: Any) -> None:
    run = make_run(owner)
    data = {
        "notes": "lr 1e-3 looks unstable",
        "tags": "sweep, lr",
        "notify_email": "on",
        "webhook_url": "https://hooks.example/run",
    }
    assert client_for(other).post(f"/runs/{run.pk}/settings/", data).status_code == 404
    response = client_for(owner).post(f"/runs/{run.pk}/settings/", data)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.notes == "lr 1e-3 looks unstable" and run.notify_email
    assert run.webhook_url == "https://hooks.example/run"
    assert sorted(run.tags.values_list("name", flat=True)) == ["lr", "sweep"]
    page = client_for(owner).get(f"/runs/{run.pk}/").content.decode()
    assert "lr 1e-3 looks unstable" in page and 'value="lr, sweep"' in page


def test_a_bad_webhook_saves_nothing_and_says_why(owner: Any) -> None:
    run = make_run(owner)
    response = client_for(owner).post(
        f"/runs/{run.pk}/settings/",
        {"notes": "changed", "tags": "", "webhook_url": "ftp://x"},
        follow=True,
    )
    assert "is not an http(s) URL" in response.content.decode()
    run.refresh_from_db()
    assert run.notes == "" and run.webhook_url == ""


def test_search_matches_name_notes_and_tags(owner: Any, other: Any) -> None:
    first = make_run(owner, name="ocr baseline")
    second = make_run(owner, name="pickscore")
    services.update_settings(second, notes="try the CPS sampler", tags="cps")
    third = make_run(owner, name="colour")
    services.update_settings(third, tags=["baseline-2"])
    theirs = make_run(other, name="ocr baseline of someone else")
    client = client_for(owner)

    def ids(query: str) -> list[int]:
        return sorted(r["id"] for r in client.get(f"/api/runs/?{query}").json()["results"])

    assert ids("q=baseline") == sorted([first.pk, third.pk])
    assert ids("q=CPS") == [second.pk]
    assert ids("tag=cps") == [second.pk]
    assert ids("tag=CPS") == [second.pk]
    assert theirs.pk not in ids("q=ocr")
    page = client.get("/runs/?q=sampler").content.decode()
    assert "pickscore" in page and "ocr baseline" not in page
    assert client.get("/api/runs/?archived=maybe").status_code == 400


def test_the_api_creates_with_and_patches_settings(owner: Any, other: Any) -> None:
    client = client_for(owner)
    created = client.post(
        "/api/runs/",
        data=json.dumps(
            {
                "preset": "tiny-color",
                "name": "tagged",
                "tags": ["Demo", "cpu"],
                "notes": "first try",
                "webhook_url": "http://127.0.0.1:8123/hook",
            }
        ),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["tags"] == ["cpu", "demo"]
    assert body["notes"] == "first try" and body["webhook_url"] == "http://127.0.0.1:8123/hook"
    run_id = body["id"]

    patch = client.patch(
        f"/api/runs/{run_id}/",
        data=json.dumps({"tags": ["final"], "notify_email": True}),
        content_type="application/json",
    )
    assert patch.status_code == 200
    assert patch.json()["tags"] == ["final"] and patch.json()["notify_email"] is True
    assert patch.json()["notes"] == "first try"

    bad = client.patch(
        f"/api/runs/{run_id}/",
        data=json.dumps({"tags": ["no spaces allowed"], "webhook_url": "nope"}),
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"tags", "webhook_url"}
    forbidden = client_for(other).patch(
        f"/api/runs/{run_id}/", data=json.dumps({"notes": "x"}), content_type="application/json"
    )
    assert forbidden.status_code == 404
    assert Run.objects.get(pk=run_id).notes == "first try"


def test_a_clone_keeps_tags_and_notifications(owner: Any) -> None:
    run = make_run(owner)
    services.update_settings(run, tags="a b", webhook_url="https://h.example/x", notify_email=True)
    clone = services.clone_run(run, owner)
    assert sorted(clone.tags.values_list("name", flat=True)) == ["a", "b"]
    assert clone.webhook_url == "https://h.example/x" and clone.notify_email
