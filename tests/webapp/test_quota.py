"""The run-creation rate limit: form, API create and clone, counted per user from the Run table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.webapp.personas import client_for, make_run
from tests.webapp.test_runs_pages import form_data
from webapp.env import Rate
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


NOW = timezone.now()


@pytest.fixture
def two_per_hour(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GROUPWISE_RUN_CREATE_LIMIT = Rate(2, 3600, "2/hour")
    # One instant for the whole test, so Retry-After is exact, not "about 3000 s".
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def runs_created(owner: Any, minutes_ago: list[int]) -> list[Run]:
    runs = []
    for minutes in minutes_ago:
        run = make_run(owner, status=Run.Status.FINISHED)
        Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
        runs.append(run)
    return runs


def post_run(client: Any) -> Any:
    return client.post("/api/runs/", {"preset": "tiny-color"}, content_type="application/json")


def test_the_api_answers_429_with_retry_after(
    owner: Any, other: Any, two_per_hour: None, django_capture_on_commit_callbacks: Any
) -> None:
    # Runs 10 and 5 minutes old fill the hour; one 61 minutes old no longer counts.
    runs_created(owner, [61, 10, 5])
    with django_capture_on_commit_callbacks(execute=False):
        refused = post_run(client_for(owner))
        # Another user's quota is their own.
        assert post_run(client_for(other)).status_code == 201
    assert refused.status_code == 429
    # The 10-minute-old run ages out of the hour in 50 minutes.
    assert refused["Retry-After"] == "3000"
    detail = refused.json()["detail"]
    assert "2 runs created in the last hour: the limit is 2" in detail
    assert "GROUPWISE_RUN_CREATE_LIMIT=2/hour" in detail
    assert Run.objects.filter(owner=owner).count() == 3


def test_a_free_slot_is_used(
    owner: Any, two_per_hour: None, django_capture_on_commit_callbacks: Any
) -> None:
    runs_created(owner, [30])
    with django_capture_on_commit_callbacks(execute=False):
        assert post_run(client_for(owner)).status_code == 201
        assert post_run(client_for(owner)).status_code == 429


def test_clones_count_too(owner: Any, two_per_hour: None) -> None:
    first, _second = runs_created(owner, [20, 1])
    client = client_for(owner)
    response = client.post(f"/api/runs/{first.pk}/clone/", {}, content_type="application/json")
    assert response.status_code == 429
    assert response["Retry-After"] == "2400"
    page = client.post(f"/runs/{first.pk}/clone/", follow=True)
    assert "the limit is 2" in page.content.decode()
    assert Run.objects.count() == 2


def test_the_form_explains_the_limit(owner: Any, two_per_hour: None) -> None:
    runs_created(owner, [59, 58])
    page = client_for(owner).post("/runs/new/", form_data())
    assert page.status_code == 429
    assert page["Retry-After"] == "60"
    assert "try again in 60 s" in " ".join(page.context["form"].non_field_errors())
    assert "try again in 60 s" in page.content.decode()
    assert Run.objects.count() == 2


def test_off_means_no_limit(
    owner: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.GROUPWISE_RUN_CREATE_LIMIT = None
    runs_created(owner, [1, 1, 1])
    with django_capture_on_commit_callbacks(execute=False):
        assert post_run(client_for(owner)).status_code == 201
