"""Login, the health report, media and worker ping (access by persona: test_personas.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from webapp.core.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("owner", password="pw-owner-123")


@pytest.fixture
def owner_client(client: Client, owner: User) -> Client:
    client.force_login(owner)
    return client


def _beat(name: str, age_seconds: float, *, stopped: bool = False) -> WorkerHeartbeat:
    now = timezone.now()
    return WorkerHeartbeat.objects.create(
        name=name,
        host="gpu-host-7",
        pid=4242,
        queues=["gpu"],
        started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=age_seconds),
        stopped_at=now if stopped else None,
    )


def test_login_page_is_public_and_logs_in(client: Client, owner: User) -> None:
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "owner", "password": "pw-owner-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_wrong_password_is_explained(client: Client, owner: User) -> None:
    response = client.post("/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert b"didn&#x27;t match" in response.content or b"didn't match" in response.content


@pytest.mark.production
def test_healthz_is_public_and_counts_live_workers_only(client: Client) -> None:
    _beat("gpu@live", age_seconds=3)
    _beat("gpu@stale", age_seconds=31)
    _beat("gpu@stopped", age_seconds=1, stopped=True)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["workers"] == {"status": "ok", "live": 1}
    assert body["status"] == "ok"
    # The public report carries no hosts or pids.
    assert b"gpu-host-7" not in response.content and b"4242" not in response.content


@pytest.mark.production
def test_healthz_without_workers_is_degraded_not_down(client: Client) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "degraded"
    assert body["checks"]["workers"] == {"status": "error", "live": 0}


@pytest.mark.production
def test_healthz_names_the_channel_layer(client: Client, settings) -> None:
    body = client.get("/healthz").json()
    expected = "RedisChannelLayer" if settings.REDIS_URL else "InMemoryChannelLayer"
    assert body["checks"]["channel_layer"] == {"status": "ok", "backend": expected}


def test_healthz_reports_an_unreachable_broker_with_the_setting(client: Client, settings) -> None:
    from webapp.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/healthz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "error"


def test_missing_model_dir_names_the_setting(
    owner_client: Client, settings, tmp_path: Path
) -> None:
    settings.GROUPWISE_MODEL_DIR = tmp_path / "no-such-model"
    report = owner_client.get("/status.json").json()
    assert report["checks"]["model"]["status"] == "error"
    assert "GROUPWISE_MODEL_DIR" in report["checks"]["model"]["message"]
    assert report["status"] == "degraded"


def test_home_shows_the_status_panel_with_worker_details(owner_client: Client) -> None:
    _beat("gpu@live", age_seconds=2)
    response = owner_client.get("/")
    assert response.status_code == 200
    assert b'id="status-panel"' in response.content
    assert b"gpu@live" in response.content


def test_ping_without_a_worker_times_out_with_advice(owner_client: Client, monkeypatch) -> None:
    from webapp.core import views

    monkeypatch.setattr(views, "PING_TIMEOUT_SECONDS", 0.3)
    response = owner_client.post("/status/ping")
    assert response.status_code == 504
    body = response.json()
    assert body["ok"] is False
    assert "make run" in body["error"]


def test_static_files_are_served_with_debug_off(client: Client, settings) -> None:
    assert settings.DEBUG is False
    response = client.get("/static/groupwise/app.css")
    assert response.status_code == 200


def test_status_json_names_a_workers_run_only_to_those_who_may_see_it(
    client: Client, owner: User, django_user_model: type[User]
) -> None:
    from tests.webapp.personas import client_for, make_run

    other = django_user_model.objects.create_user("other", password="pw-other-123")
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    run = make_run(owner, status="running")
    busy = _beat("gpu@busy", 1)
    busy.current_run_id = run.pk
    busy.save()
    _beat("gpu@idle", 1)

    def workers(user: User) -> dict[str, tuple[bool, int | None]]:
        report = client_for(user).get("/status.json").json()
        rows = report["checks"]["workers"]["details"]["workers"]
        return {w["name"]: (w["training"], w["current_run_id"]) for w in rows}

    idle = (False, None)
    assert workers(owner) == {"gpu@busy": (True, run.pk), "gpu@idle": idle}
    assert workers(staff) == {"gpu@busy": (True, run.pk), "gpu@idle": idle}
    # The queue shows another user's run without its id; the status panel too.
    assert workers(other) == {"gpu@busy": (True, None), "gpu@idle": idle}
    assert str(run.pk) not in client_for(other).get("/").content.decode().split("gpu@busy")[-1][:80]


def test_pages_send_nosniff_and_a_same_origin_referrer_policy(owner_client: Client) -> None:
    for path in ("/", "/runs/", "/api/runs/", "/login/"):
        response = owner_client.get(path)
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["Referrer-Policy"] == "same-origin", path
        assert response["X-Frame-Options"] == "DENY", path
