"""Home page, health endpoint and worker ping."""

from __future__ import annotations

import time
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from webapp.core import status
from webapp.core.tasks import ping

PING_TIMEOUT_SECONDS = 5.0


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "core/home.html", {"report": status.collect_for(request.user)})


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Public liveness report: statuses and counts, never hosts, pids or paths.

    503 when the database or broker is down (the site cannot work), 200 otherwise; ``status``
    is ``degraded`` when, for example, no worker is live.
    """
    report = status.collect()
    public: dict[str, Any] = {"status": report["status"], "time": report["time"], "checks": {}}
    for name, check in report["checks"].items():
        entry: dict[str, Any] = {"status": check["status"]}
        if name == "workers" and "live" in check["details"]:
            entry["live"] = check["details"]["live"]
        if name in ("broker", "channel_layer", "database"):
            entry.update(
                {
                    k: v
                    for k, v in check["details"].items()
                    if k in ("transport", "backend", "vendor")
                }
            )
        public["checks"][name] = entry
    return JsonResponse(public, status=503 if report["status"] == "error" else 200)


@never_cache
@require_GET
def status_json(request: HttpRequest) -> JsonResponse:
    """The full report behind the home page's status panel, as ``request.user`` may see it."""
    return JsonResponse(status.collect_for(request.user))


@require_POST
def ping_worker(request: HttpRequest) -> JsonResponse:
    """Send ``core.ping`` through the broker and wait for a worker's answer."""
    started = time.perf_counter()
    result = ping.delay()
    try:
        # A database result backend is polled: every 50 ms instead of Celery's 500 ms default.
        answer = result.get(timeout=PING_TIMEOUT_SECONDS, interval=0.05)
    except CeleryTimeoutError:
        result.forget()
        return JsonResponse(
            {
                "ok": False,
                "error": f"no worker answered within {PING_TIMEOUT_SECONDS:.0f} s: "
                "start one with `make run` or `celery -A webapp worker -P solo -Q gpu,default`",
            },
            status=504,
        )
    except Exception as exc:
        return JsonResponse(
            {"ok": False, "error": f"broker or result backend failed: {exc}"}, status=502
        )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return JsonResponse({"ok": True, "round_trip_ms": elapsed_ms, "worker": answer})
