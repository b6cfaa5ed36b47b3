"""Notifications when a run ends: webhook to a local HTTP server, email through Django's mail."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from engine.net.ports import free_port
from tests.webapp.personas import make_run
from tests.webapp.webhooks import webhook_receiver
from webapp.runs import notifications
from webapp.runs.models import Notification, Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_retries(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GROUPWISE_WEBHOOK_ATTEMPTS = 3
    settings.GROUPWISE_WEBHOOK_TIMEOUT = 5.0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.GROUPWISE_BASE_URL = "https://gw.example"
    monkeypatch.setattr(notifications, "BACKOFF_SECONDS", 0.0)


def ended(owner: Any, status: str, **fields: Any) -> Run:
    run = make_run(owner, status=status, name="colours")
    error = "boom" if status == "failed" else ""
    Run.objects.filter(pk=run.pk).update(step=7, error=error, **fields)
    run.refresh_from_db()
    return run


def test_webhook_receives_the_run_and_a_link(owner: Any) -> None:
    with webhook_receiver() as hook:
        run = ended(owner, "finished", webhook_url="")
        Run.objects.filter(pk=run.pk).update(webhook_url=hook.url)
        (row,) = notifications.notify_run_ended(run.pk)
    assert hook.received == [
        {
            "event": "run_ended",
            "run": {
                "id": run.pk,
                "name": "colours",
                "status": "finished",
                "step": 7,
                "max_steps": run.max_steps,
                "error": "",
                "url": f"https://gw.example/runs/{run.pk}/",
            },
        }
    ]
    assert (row.channel, row.delivered, row.detail, row.status) == (
        "webhook",
        True,
        "HTTP 200",
        "finished",
    )


def test_a_server_error_is_retried_and_a_refusal_is_not(owner: Any) -> None:
    with webhook_receiver([503, 500]) as hook:
        run = ended(owner, "failed")
        Run.objects.filter(pk=run.pk).update(webhook_url=hook.url)
        (row,) = notifications.notify_run_ended(run.pk)
        assert hook.attempts == 3 and row.delivered
        assert hook.received[0]["run"]["error"] == "boom"

    with webhook_receiver([404]) as hook:
        run = ended(owner, "interrupted")
        Run.objects.filter(pk=run.pk).update(webhook_url=hook.url)
        (row,) = notifications.notify_run_ended(run.pk)
        assert hook.attempts == 1 and not row.delivered
        assert "gave up after 1 attempt(s): HTTP 404" in row.detail


def test_an_unreachable_webhook_is_recorded_not_raised(owner: Any) -> None:
    port = free_port()  # nothing listens there
    run = ended(owner, "finished")
    Run.objects.filter(pk=run.pk).update(webhook_url=f"http://127.0.0.1:{port}/hook")
    (row,) = notifications.notify_run_ended(run.pk)
    assert not row.delivered and "gave up after 3 attempt(s)" in row.detail
    assert Notification.objects.filter(run=run).count() == 1


def test_email_goes_to_the_owner(owner: Any) -> None:
    owner.email = "owner@example.org"
    owner.save()
    run = ended(owner, "failed", notify_email=True)
    (row,) = notifications.notify_run_ended(run.pk)
    assert row.delivered and row.target == "owner@example.org"
    (message,) = mail.outbox
    assert message.to == ["owner@example.org"]
    assert message.subject == f"[Groupwise] run #{run.pk} colours: failed"
    assert "Error: boom" in message.body and f"https://gw.example/runs/{run.pk}/" in message.body


def test_no_address_is_recorded(owner: Any) -> None:
    run = ended(owner, "finished", notify_email=True)
    (row,) = notifications.notify_run_ended(run.pk)
    assert not row.delivered and "no email address" in row.detail
    assert mail.outbox == []


@pytest.mark.parametrize("status", ["cancelled", "running", "queued"])
def test_only_the_endings_a_user_waits_for_notify(owner: Any, status: str) -> None:
    owner.email = "owner@example.org"
    owner.save()
    run = ended(owner, status, notify_email=True, webhook_url="http://127.0.0.1:9/")
    assert notifications.notify_run_ended(run.pk) == []
    assert mail.outbox == []
