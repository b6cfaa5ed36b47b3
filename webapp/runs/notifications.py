"""Telling a run's owner it ended: an email (Django's mail settings) and/or a webhook POST.

Sent for the statuses a user waits for: finished, failed, interrupted. Each attempt is recorded
as a ``Notification`` row with what the other side answered, so a failed delivery is visible on
the run's page instead of lost in a log. Webhooks get bounded retries with backoff; a dead
endpoint never holds up the worker for more than attempts x timeout.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from engine.net import egress
from webapp.runs.models import Notification, Run

logger = logging.getLogger(__name__)

#: Run statuses that notify; a cancel is the user's own doing.
NOTIFY_ON = (Run.Status.FINISHED, Run.Status.FAILED, Run.Status.INTERRUPTED)
#: Seconds before the second attempt; doubled for each one after.
BACKOFF_SECONDS = 0.5


def message(run: Run) -> dict[str, Any]:
    """The JSON a webhook receives (and the facts an email states)."""
    return {
        "event": "run_ended",
        "run": {
            "id": run.pk,
            "name": run.name,
            "status": run.status,
            "step": run.step,
            "max_steps": run.max_steps,
            "error": run.error,
            "url": settings.GROUPWISE_BASE_URL.rstrip("/")
            + reverse("run-detail-page", args=[run.pk]),
        },
    }


def notify_run_ended(run_id: int) -> list[Notification]:
    """Send the run's configured notifications for its current status; the rows recorded."""
    run = Run.objects.select_related("owner").get(pk=run_id)
    if run.status not in NOTIFY_ON:
        return []
    sent = []
    if run.notify_email:
        sent.append(_email(run))
    if run.webhook_url:
        sent.append(_webhook(run))
    return sent


def _email(run: Run) -> Notification:
    address = run.owner.email
    if not address:
        return _record(run, Notification.Channel.EMAIL, "", False, "the owner has no email address")
    facts = message(run)["run"]
    body = (
        f"Run #{run.pk} {run.name} {run.status} after {run.step} of {run.max_steps} steps.\n"
        + (f"Error: {run.error}\n" if run.error else "")
        + f"\n{facts['url']}\n"
    )
    try:
        send_mail(
            f"[Groupwise] run #{run.pk} {run.name}: {run.status}",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [address],
        )
    except Exception as error:
        logger.warning("run %s: email to %s failed: %s", run.pk, address, error)
        return _record(run, Notification.Channel.EMAIL, address, False, f"{error}")
    return _record(run, Notification.Channel.EMAIL, address, True, "sent")


def _webhook(run: Run) -> Notification:
    body = json.dumps(message(run)).encode()
    attempts = settings.GROUPWISE_WEBHOOK_ATTEMPTS
    # Checked again on every connection, after DNS: the URL was checked when it was set, but a
    # name may resolve elsewhere now, and a redirect may point anywhere.
    opener = egress.policy().opener()
    detail = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
        request = urllib.request.Request(
            run.webhook_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "groupwise"},
        )
        try:
            with opener.open(request, timeout=settings.GROUPWISE_WEBHOOK_TIMEOUT) as r:
                detail = f"HTTP {r.status}"
                return _record(run, Notification.Channel.WEBHOOK, run.webhook_url, True, detail)
        except urllib.error.HTTPError as error:
            detail = f"HTTP {error.code} {error.reason}"
            if error.code < 500:
                break  # The endpoint refused this message: sending it again will not help.
        except (OSError, ValueError) as error:
            if egress.is_refusal(error):
                # The user sees the policy's word only, never what an internal address said.
                detail = egress.REFUSED
                break
            detail = f"{type(error).__name__}: {error}"
    logger.warning("run %s: webhook %s failed: %s", run.pk, run.webhook_url, detail)
    return _record(
        run,
        Notification.Channel.WEBHOOK,
        run.webhook_url,
        False,
        f"gave up after {attempt + 1} attempt(s): {detail}",
    )


def _record(run: Run, channel: str, target: str, delivered: bool, detail: str) -> Notification:
    return Notification.objects.create(
        run=run,
        channel=channel,
        target=target,
        status=run.status,
        delivered=delivered,
        detail=detail[:2000],
    )
