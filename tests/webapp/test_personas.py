"""Who may do what: one table of every endpoint, media URL and socket, for four personas.

Each row is an endpoint with the status the owner of a run, another user, staff and an anonymous
visitor get. A socket's status is 101 when it stays open, else the code it is closed with after
being accepted (none is refused at the handshake, where a browser sees no code). A refused request
(401, 403, 404, or a redirect to a login page) must change nothing in the database.
``test_every_route_is_in_the_table`` fails when a URL pattern or socket route is not in the
table: a new endpoint joins it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.webapp.personas import make_run
from tests.webapp.sockets import outcome
from tests.webapp.test_runs_pages import form_data
from webapp.accounts.models import ApiToken
from webapp.routing import websocket_urlpatterns
from webapp.runs.models import Run
from webapp.sweeps.models import Sweep

PERSONAS = ("owner", "other", "staff", "anonymous")
VALID = {"preset": "tiny-color", "overrides": {"max_steps": 3}}


@dataclass(frozen=True)
class Row:
    """One endpoint. ``path`` may hold ``{run}`` (the owner's run) and ``{run2}`` (another one
    of the owner's); ``route`` is the URL name, or the socket route, it exercises."""

    route: str
    method: str
    path: str
    owner: int
    other: int
    staff: int
    anonymous: int
    payload: Any = None
    #: The run's status before the request (actions depend on it).
    status: str = Run.Status.QUEUED

    def expected(self, persona: str) -> int:
        return int(getattr(self, persona))


API_JSON = "application/json"

TABLE = [
    # Pages. Anonymous visitors are sent to the login page (302) everywhere but these three.
    Row("login", "GET", "/login/", 200, 200, 200, 200),
    Row("logout", "POST", "/logout/", 302, 302, 302, 302),
    Row("healthz", "GET", "/healthz", 200, 200, 200, 200),
    Row("home", "GET", "/", 200, 200, 200, 302),
    Row("status-json", "GET", "/status.json", 200, 200, 200, 302),
    Row("ping-worker", "POST", "/status/ping", 200, 200, 200, 302),
    Row("run-list", "GET", "/runs/", 200, 200, 200, 302),
    Row("run-new", "GET", "/runs/new/", 200, 200, 200, 302),
    Row("run-new", "POST", "/runs/new/", 302, 302, 302, 302, payload="form"),
    # Another user's runs are not there to compare: back to the run list with a message.
    Row("run-compare", "GET", "/runs/compare/?ids={run}&ids={run2}", 200, 302, 200, 302),
    Row("run-detail-page", "GET", "/runs/{run}/", 200, 404, 200, 302),
    Row("run-gallery", "GET", "/runs/{run}/gallery/", 200, 404, 200, 302),
    Row("run-action", "POST", "/runs/{run}/cancel/", 302, 404, 302, 302),
    Row("run-action", "POST", "/runs/{run}/resume/", 302, 404, 302, 302, status="interrupted"),
    Row("run-action", "POST", "/runs/{run}/clone/", 302, 404, 302, 302),
    Row("run-action", "POST", "/runs/{run}/bogus/", 404, 404, 404, 302),
    Row("run-action", "GET", "/runs/{run}/cancel/", 405, 405, 405, 302),
    Row("run-action", "POST", "/runs/{run}/archive/", 302, 404, 302, 302, status="finished"),
    Row("run-action", "POST", "/runs/{run}/delete/", 302, 404, 302, 302, status="finished"),
    Row("run-settings", "POST", "/runs/{run}/settings/", 302, 404, 302, 302, {"notes": "n"}),
    Row("run-queue", "GET", "/runs/queue/", 200, 200, 200, 302),
    Row("run-export-metrics-csv", "GET", "/runs/{run}/export/metrics.csv", 200, 404, 200, 302),
    Row("run-export-metrics-json", "GET", "/runs/{run}/export/metrics.json", 200, 404, 200, 302),
    Row("run-export-samples", "GET", "/runs/{run}/export/samples.zip", 200, 404, 200, 302),
    # The run has no checkpoint yet: a 404 that says so even for its owner.
    Row("run-export-weights", "GET", "/runs/{run}/export/weights.zip", 404, 404, 404, 302),
    Row("run-sweep", "POST", "/runs/{run}/sweep/", 302, 404, 302, 302, {"sizes": "1"}),
    Row("sweep-list", "GET", "/sweeps/", 200, 200, 200, 302),
    Row("sweep-detail", "GET", "/sweeps/{sweep}/", 200, 404, 200, 302),
    Row("sweep-launch-best", "POST", "/sweeps/{sweep}/launch/", 302, 404, 302, 302),
    Row("tokens", "GET", "/tokens/", 200, 200, 200, 302),
    Row("tokens", "POST", "/tokens/", 200, 200, 200, 302, payload={"name": "ci"}),
    Row("run-media", "GET", "/media/runs/{run}/rollout/a.png", 200, 404, 200, 302),
    Row("run-media", "GET", "/media/runs/{run}/../{run2}/b.png", 404, 404, 404, 302),
    # The admin: staff only (the staff persona has no model permissions, hence 403 on a model).
    Row("admin:*", "GET", "/admin/", 302, 302, 200, 302),
    Row("admin:*", "GET", "/admin/runs/run/", 302, 302, 403, 302),
    # The REST API answers 401 to anonymous callers, 404 for another user's run.
    Row("api-run-list", "GET", "/api/runs/", 200, 200, 200, 401),
    Row("api-run-list", "POST", "/api/runs/", 201, 201, 201, 401, payload=VALID),
    Row("api-run-detail", "GET", "/api/runs/{run}/", 200, 404, 200, 401),
    Row("api-run-detail", "PATCH", "/api/runs/{run}/", 200, 404, 200, 401, {"notes": "n"}),
    Row("api-run-detail", "DELETE", "/api/runs/{run}/", 204, 404, 204, 401, status="finished"),
    Row("api-queue", "GET", "/api/queue/", 200, 200, 200, 401),
    Row("api-run-export", "GET", "/api/runs/{run}/export/", 200, 404, 200, 401),
    Row("api-run-export-metrics", "GET", "/api/runs/{run}/export/metrics/", 200, 404, 200, 401),
    Row("api-run-export-samples", "GET", "/api/runs/{run}/export/samples/", 200, 404, 200, 401),
    Row("api-run-export-weights", "GET", "/api/runs/{run}/export/weights/", 404, 404, 404, 401),
    Row("api-sweep-list", "GET", "/api/sweeps/", 200, 200, 200, 401),
    Row("api-sweep-list", "POST", "/api/sweeps/", 201, 201, 201, 401, {"preset": "tiny-color"}),
    Row("api-sweep-detail", "GET", "/api/sweeps/{sweep}/", 200, 404, 200, 401),
    Row("api-run-cancel", "POST", "/api/runs/{run}/cancel/", 200, 404, 200, 401, payload={}),
    Row("api-run-resume", "POST", "/api/runs/{run}/resume/", 409, 404, 409, 401, payload={}),
    Row("api-run-clone", "POST", "/api/runs/{run}/clone/", 201, 404, 201, 401, payload={}),
    Row("api-run-events", "GET", "/api/runs/{run}/events/", 200, 404, 200, 401),
    Row("api-run-samples", "GET", "/api/runs/{run}/samples/", 200, 404, 200, 401),
    Row("api-run-metrics", "GET", "/api/runs/{run}/metrics/", 200, 404, 200, 401),
    Row("api-run-state", "GET", "/api/runs/{run}/state/", 200, 404, 200, 401),
    Row("api-presets", "GET", "/api/presets/", 200, 200, 200, 401),
    Row("api-recipe-validate", "POST", "/api/recipes/validate/", 200, 200, 200, 401, VALID),
    Row("api-recipe-layout", "POST", "/api/recipes/layout/", 200, 200, 200, 401, payload=VALID),
    Row("api-schema", "GET", "/api/schema/", 200, 200, 200, 401),
    Row("api-docs", "GET", "/api/docs/", 200, 200, 200, 302),
    # Sockets: 101 accepted; 4401 anonymous, 4404 not yours (webapp/*/consumers.py).
    Row("ws/status/", "WS", "/ws/status/", 101, 101, 101, 4401),
    Row("ws/runs/<int:run_id>/", "WS", "/ws/runs/{run}/", 101, 4404, 101, 4401),
    # Every other socket path: closed the same way for everyone.
    Row("", "WS", "/ws/no-such-socket/", 4404, 4404, 4404, 4404),
]


def url_routes() -> Iterator[str]:
    """Every URL name of the project (an unnamed pattern by its route), and ``admin:*``."""

    def walk(patterns: list[Any]) -> Iterator[str]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    # Django's own admin: one gate (staff) in front of all of its URLs.
                    yield "admin:*"
                else:
                    yield from walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                yield pattern.name or str(pattern.pattern)

    yield from walk(get_resolver().url_patterns)


def test_every_route_is_in_the_table() -> None:
    routes = set(url_routes()) | {str(p.pattern) for p in websocket_urlpatterns}
    covered = {row.route for row in TABLE}
    assert routes - covered == set(), "add a row to TABLE for each new endpoint"
    assert covered - routes == set(), "rows for routes that no longer exist"


@pytest.fixture
def world(
    owner: Any, other: Any, staff: Any, settings: Any, tmp_path: Path, monkeypatch: Any
) -> dict[str, Any]:
    settings.MEDIA_ROOT = tmp_path / "media"
    users = {"owner": owner, "other": other, "staff": staff}
    # A worker's answer to the ping, without a broker round trip.
    monkeypatch.setattr(
        "webapp.core.views.ping.delay",
        lambda: type("Answer", (), {"get": lambda self, **kw: {"host": "test"}})(),
    )
    return users


def prepare(row: Row, owner: Any) -> dict[str, int]:
    run = make_run(owner, status=row.status)
    second = make_run(owner, name="second")
    media = Path(_media_root()) / "runs"
    (media / str(run.pk) / "rollout").mkdir(parents=True)
    (media / str(run.pk) / "rollout" / "a.png").write_bytes(b"png")
    (media / str(second.pk)).mkdir(parents=True)
    (media / str(second.pk) / "b.png").write_bytes(b"png")
    sweep = Sweep.objects.create(owner=owner, run=run, recipe=run.recipe, sizes=[1, 2])
    return {"run": run.pk, "run2": second.pk, "sweep": sweep.pk}


def _media_root() -> str:
    from django.conf import settings

    return str(settings.MEDIA_ROOT)


def snapshot() -> tuple[Any, ...]:
    return (
        sorted(Run.objects.values_list("pk", "status", "owner_id", "notes", "archived")),
        ApiToken.objects.count(),
        Sweep.objects.count(),
    )


REFUSED = {401, 403, 404, 405, 4401, 4404}

HTTP_ROWS = [row for row in TABLE if row.method != "WS"]


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("row", HTTP_ROWS, ids=[f"{r.method} {r.path}" for r in HTTP_ROWS])
def test_http(row: Row, persona: str, world: dict[str, Any]) -> None:
    ids = prepare(row, world["owner"])
    client = Client()
    if persona != "anonymous":
        client.force_login(world[persona])
    path = row.path.format(**ids)
    before = snapshot()
    if row.method == "GET":
        response = client.get(path)
    elif row.method in ("PATCH", "DELETE"):
        response = client.generic(row.method, path, json.dumps(row.payload or {}), API_JSON)
    elif row.payload == "form":
        response = client.post(path, form_data())
    elif path.startswith("/api/"):
        response = client.post(path, json.dumps(row.payload or {}), content_type=API_JSON)
    else:
        response = client.post(path, row.payload or {})
    expected = row.expected(persona)
    assert response.status_code == expected, getattr(response, "content", b"")[:300]
    to_login = response.status_code == 302 and "login/" in response["Location"]
    if persona == "anonymous" and expected == 302 and row.route not in ("logout",):
        assert to_login, response["Location"]
    if response.status_code in REFUSED or (to_login and row.route != "logout"):
        assert snapshot() == before, "a refused request changed something"


WS_ROWS = [row for row in TABLE if row.method == "WS"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("row", WS_ROWS, ids=[r.path for r in WS_ROWS])
async def test_socket(row: Row, persona: str, world: dict[str, Any]) -> None:
    ids = await database_sync_to_async(prepare)(row, world["owner"])
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), row.path.format(**ids))
    communicator.scope["user"] = world.get(persona, AnonymousUser())
    try:
        assert await outcome(communicator) == row.expected(persona)
    finally:
        await communicator.disconnect()
