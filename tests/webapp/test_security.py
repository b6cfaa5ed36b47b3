"""What an ordinary signed-in user must not be able to do to the workers or the web server:
run a command, reach internal addresses, exhaust memory, or store what breaks the API.

Every case runs as ``owner``, a non-staff user, through the API and the New run form.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from tests.webapp.personas import client_for, make_run
from tests.webapp.sockets import outcome
from tests.webapp.test_runs_pages import form_data
from webapp.core.consumers import CLOSE_UNKNOWN_PATH
from webapp.env import Rate
from webapp.routing import websocket_urlpatterns
from webapp.runs import notifications, services
from webapp.runs.models import Notification, Run
from webapp.runs.tasks import train_run

pytestmark = pytest.mark.django_db

REFUSED = "refused by the egress policy"


def post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def raw_post(client: Client, url: str, text: str) -> Any:
    return client.post(url, data=text, content_type="application/json")


# --- 1. No recipe field runs a program -----------------------------------------------------


COLOCATED = {"backend": "sglang", "launch": "colocated"}


@pytest.mark.parametrize(
    "body",
    [
        {"preset": "tiny-color", "overrides": {**COLOCATED, "server_command": "sh -c 'id' x"}},
        {"preset": "tiny-color", "overrides": {"rollout.server_command": "sh -c 'id' x"}},
        {"recipe": {"rollout": {**COLOCATED, "server_command": "sh -c 'id' x"}}},
    ],
)
def test_the_api_refuses_a_server_command(owner: Any, body: dict[str, Any]) -> None:
    client = client_for(owner)
    for url in ("/api/runs/", "/api/recipes/layout/"):
        answer = post(client, url, body)
        assert answer.status_code == 400
        (message,) = next(iter(answer.json().values()))
        assert "GROUPWISE_ROLLOUT_SERVER_COMMAND" in message
    checked = post(client, "/api/recipes/validate/", body).json()
    assert not checked["valid"]
    assert Run.objects.count() == 0


def test_the_form_refuses_a_posted_server_command(owner: Any) -> None:
    page = client_for(owner).post(
        "/runs/new/", form_data(rollout__server_command="sh -c 'touch /tmp/pwned' x")
    )
    assert page.status_code == 200
    errors = page.context["form"].non_field_errors()
    assert any("rollout.server_command is not a recipe setting" in e for e in errors)
    assert Run.objects.count() == 0


def test_a_command_planted_in_the_database_is_never_run(
    owner: Any, tmp_path: Path, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Someone with database access (or a recipe stored before the fix, had the migration not
    # run) plants a command; resuming the run must fail clearly and run nothing.
    settings.GROUPWISE_RUNS_DIR = tmp_path / "runs"
    settings.MEDIA_ROOT = tmp_path / "media"
    marker = tmp_path / "pwned"
    run = make_run(owner, status=Run.Status.INTERRUPTED)
    recipe = dict(run.recipe)
    recipe["rollout"] = {**recipe["rollout"], **COLOCATED, "server_command": f"touch {marker}"}
    Run.objects.filter(pk=run.pk).update(recipe=recipe)
    with django_capture_on_commit_callbacks(execute=False):
        services.resume_run(run)
    assert train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert "rollout.server_command is not a recipe setting" in run.error
    assert not marker.exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_the_server_command_from_stored_recipes(owner: Any) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("runs", "0003_sweep")])
    old = executor.loader.project_state([("runs", "0003_sweep")]).apps
    OldRun = old.get_model("runs", "Run")
    stored = make_run(owner).recipe
    stored["rollout"]["server_command"] = "sh -c id"
    planted = OldRun.objects.create(owner_id=owner.pk, name="old", recipe=stored, max_steps=1)
    untouched = OldRun.objects.create(
        owner_id=owner.pk, name="new", recipe=make_run(owner).recipe, max_steps=1
    )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    migrated = Run.objects.get(pk=planted.pk).recipe
    assert "server_command" not in migrated["rollout"]
    assert migrated["rollout"] == make_run(owner).recipe["rollout"]
    assert Run.objects.get(pk=untouched.pk).recipe == make_run(owner).recipe


# --- 2. User URLs stay off loopback, link-local and private addresses ----------------------


REFUSED_URLS = [
    "http://127.0.0.1:6379/",
    "http://localhost:5432/",
    "http://[::1]:8000/",
    "http://0.0.0.0:80/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7:30000/",
]


@pytest.fixture
def default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The egress policy as shipped: nothing listed (the suite lists 127.0.0.1)."""
    monkeypatch.setenv("GROUPWISE_EGRESS_ALLOW", "")


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_server_urls_on_internal_addresses_are_field_errors(owner: Any, url: str) -> None:
    answer = post(
        client_for(owner),
        "/api/runs/",
        {"preset": "tiny-color", "overrides": {"backend": "sglang", "server_urls": [url]}},
    )
    assert answer.status_code == 400
    (message,) = answer.json()["rollout.server_urls[0]"]
    assert REFUSED in message and "GROUPWISE_EGRESS_ALLOW" in message
    assert Run.objects.count() == 0


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_webhooks_on_internal_addresses_are_field_errors(owner: Any, url: str) -> None:
    client = client_for(owner)
    answer = post(client, "/api/runs/", {"preset": "tiny-color", "webhook_url": url})
    assert answer.status_code == 400
    assert REFUSED in answer.json()["webhook_url"][0]
    run = make_run(owner)
    changed = client.patch(
        f"/api/runs/{run.pk}/", json.dumps({"webhook_url": url}), "application/json"
    )
    assert changed.status_code == 400
    run.refresh_from_db()
    assert run.webhook_url == ""
    page = client.post("/runs/new/", form_data(webhook_url=url))
    assert REFUSED in page.context["form"].errors["webhook_url"][0]


class _Listener(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"secret from inside")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def internal_listener() -> Iterator[http.server.HTTPServer]:
    """A service on 127.0.0.2, which the suite's policy (127.0.0.1) does not list."""
    server = http.server.HTTPServer(("127.0.0.2", 0), _Listener)
    server.hits = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_webhook_is_checked_again_when_it_is_sent(
    owner: Any, internal_listener: http.server.HTTPServer, settings: Any
) -> None:
    # Allowed when it was set (say the policy changed since, or the name resolved elsewhere):
    # the connection itself is refused, and the user learns nothing of the listener.
    settings.GROUPWISE_WEBHOOK_ATTEMPTS = 3
    url = f"http://127.0.0.2:{internal_listener.server_port}/hook"
    run = make_run(owner, status=Run.Status.FINISHED)
    Run.objects.filter(pk=run.pk).update(webhook_url=url)
    (row,) = notifications.notify_run_ended(run.pk)
    assert not row.delivered
    assert row.detail == f"gave up after 1 attempt(s): {REFUSED}"
    assert internal_listener.hits == 0  # type: ignore[attr-defined]
    assert Notification.objects.filter(run=run).count() == 1


def test_a_webhook_the_policy_lists_is_delivered(
    owner: Any, internal_listener: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROUPWISE_EGRESS_ALLOW", "127.0.0.1,127.0.0.2")
    url = f"http://127.0.0.2:{internal_listener.server_port}/hook"
    assert services.check_webhook_url(url) == url
    run = make_run(owner, status=Run.Status.FINISHED)
    Run.objects.filter(pk=run.pk).update(webhook_url=url)
    (row,) = notifications.notify_run_ended(run.pk)
    assert row.delivered and row.detail == "HTTP 200"
    assert internal_listener.hits == 1  # type: ignore[attr-defined]


# --- 3. One request cannot take the web server down -----------------------------------------


HUGE = {
    "n_samples_per_prompt": 1_000_000_000,
    "rollout_batch_size": 1_000_000_000,
    "diffusion_microgroup_size": 1_000_000_000,
}


def test_an_oversized_layout_is_a_field_error(owner: Any) -> None:
    client = client_for(owner)
    body = {"preset": "tiny-color", "overrides": HUGE}
    started = time.monotonic()
    checked = post(client, "/api/recipes/validate/", body).json()
    # The bar: within a second (it took 23 GB and a killed process before the bounds);
    # the work is O(1) now, a few milliseconds, so even a loaded machine stays far inside it.
    assert time.monotonic() - started < 1.0
    assert not checked["valid"]
    fields = {p["field"] for p in checked["problems"]}
    assert fields == {f"layout.{name}" for name in HUGE}
    assert post(client, "/api/recipes/layout/", body).status_code == 400
    created = post(client, "/api/runs/", body)
    assert created.status_code == 400
    assert "at most 256" in created.json()["layout.n_samples_per_prompt"][0]
    assert Run.objects.count() == 0


@pytest.mark.parametrize("value", [2**31, 2**63, 10**30])
def test_integers_past_the_database_are_field_errors(owner: Any, value: int) -> None:
    answer = post(
        client_for(owner), "/api/runs/", {"preset": "tiny-color", "overrides": {"max_steps": value}}
    )
    assert answer.status_code == 400
    assert "run.max_steps" in answer.json()
    assert Run.objects.count() == 0


@pytest.mark.parametrize("ids", [["99999999999999999999"], ["-5", "1"], ["9223372036854775808"]])
def test_compare_ids_out_of_range_are_a_message(owner: Any, ids: list[str]) -> None:
    make_run(owner)
    answer = client_for(owner).get("/runs/compare/", {"ids": ids}, follow=True)
    assert answer.status_code == 200
    assert "Pick two or more" in answer.content.decode()


@pytest.mark.parametrize(
    "url", ["/api/runs/{run}/samples/?step={big}", "/api/runs/{run}/events/?after={big}"]
)
def test_query_numbers_past_the_database_are_field_errors(owner: Any, url: str) -> None:
    run = make_run(owner)
    answer = client_for(owner).get(url.format(run=run.pk, big=2**70))
    assert answer.status_code == 400


def test_validate_and_layout_share_the_recipe_check_limit(owner: Any, settings: Any) -> None:
    settings.GROUPWISE_RECIPE_CHECK_LIMIT = Rate(3, 60, "3/minute")
    client = client_for(owner)
    body = {"preset": "tiny-color"}
    assert post(client, "/api/recipes/validate/", body).status_code == 200
    assert post(client, "/api/recipes/layout/", body).status_code == 200
    assert post(client, "/api/recipes/validate/", body).status_code == 200
    limited = post(client, "/api/recipes/layout/", body)
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1
    # Another user has a budget of their own.
    other = client_for(type(owner).objects.create_user("third", password="third-pass-123"))
    assert post(other, "/api/recipes/validate/", body).status_code == 200


def test_an_oversized_api_body_is_a_json_413_naming_the_setting(owner: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    run = make_run(owner)
    client = client_for(owner)
    notes = "x" * 3000
    answers = [
        post(client, "/api/runs/", {"preset": "tiny-color", "notes": notes}),
        client.patch(f"/api/runs/{run.pk}/", json.dumps({"notes": notes}), "application/json"),
        client.post("/api/runs/", {"preset": "tiny-color", "notes": notes}),  # a form body
        post(client, "/api/recipes/validate/", {"preset": "tiny-color", "name": notes}),
    ]
    for answer in answers:
        assert answer.status_code == 413
        assert answer["Content-Type"] == "application/json"
        detail = answer.json()["detail"]
        assert "at most 2,048 bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)" in detail, detail
    # The JSON body's length, worked out: 3000 notes characters plus the 37 of
    # {"preset": "tiny-color", "notes": ""}.
    assert answers[0].json()["detail"].startswith("The request body is 3,037 bytes")
    assert Run.objects.count() == 1
    assert Run.objects.get().notes == ""
    # Under the limit the same calls work.
    assert post(client, "/api/runs/", {"preset": "tiny-color", "notes": "short"}).status_code == 201


def test_too_many_form_fields_is_a_json_400_naming_the_setting(owner: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    body = {f"field{i}": "x" for i in range(10)}
    answer = client_for(owner).post("/api/runs/", body)
    assert answer.status_code == 400
    assert (
        "more fields than the 5 allowed (DATA_UPLOAD_MAX_NUMBER_FIELDS)" in answer.json()["detail"]
    )
    assert Run.objects.count() == 0


# --- 4. Text UTF-8 cannot store, and absurd nesting, stop at the boundary -------------------


SURROGATE = '{"preset": "tiny-color", "overrides": {"prompts": ["\\ud800 red"]}}'


def test_a_lone_surrogate_is_refused_and_nothing_is_stored(owner: Any) -> None:
    client = client_for(owner)
    for url in ("/api/runs/", "/api/recipes/validate/", "/api/recipes/layout/"):
        answer = raw_post(client, url, SURROGATE)
        assert answer.status_code == 400, url
        (message,) = answer.json()["overrides.prompts[0]"]
        assert "lone surrogate" in message
    assert Run.objects.count() == 0
    assert client.get("/api/runs/").status_code == 200


def test_surrogates_in_keys_and_other_fields_are_refused(owner: Any) -> None:
    client = client_for(owner)
    for text in (
        '{"preset": "tiny-color", "name": "\\udfff"}',
        '{"preset": "tiny-color", "notes": "ok", "tags": ["\\ud83d"]}',
        '{"preset": "tiny-color", "overrides": {"\\ud800": 1}}',
    ):
        assert raw_post(client, "/api/runs/", text).status_code == 400
    run = make_run(owner)
    changed = client.patch(f"/api/runs/{run.pk}/", '{"notes": "\\ud800"}', "application/json")
    assert changed.status_code == 400
    assert Run.objects.get(pk=run.pk).notes == ""
    assert client.get(f"/api/runs/{run.pk}/").status_code == 200


def test_a_jsonl_upload_with_a_surrogate_is_a_form_error(owner: Any) -> None:
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "\\ud800 red"}\n', "application/jsonl")
    page = client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": upload})
    assert page.status_code == 200
    assert "line 1 holds a lone surrogate" in page.context["form"].errors["prompt_file"][0]
    assert Run.objects.count() == 0


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize("url", ["/api/runs/", "/api/recipes/validate/", "/api/recipes/layout/"])
def test_deeply_nested_json_is_a_400(owner: Any, url: str) -> None:
    client = client_for(owner)
    for text in (DEEP, '{"preset": "tiny-color", "overrides": {"prompts": ' + DEEP + "}}"):
        answer = raw_post(client, url, text)
        assert answer.status_code == 400
        assert "nested deeper" in answer.json()["detail"]
    assert Run.objects.count() == 0


def test_a_deeply_nested_jsonl_line_is_a_form_error(owner: Any) -> None:
    line = '{"prompt": "x", "extra": ' + DEEP + "}\n"
    upload = SimpleUploadedFile("p.jsonl", line.encode(), "application/jsonl")
    page = client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": upload})
    assert page.status_code == 200
    assert "nests too deeply" in page.context["form"].errors["prompt_file"][0]


async def test_an_unknown_socket_path_is_closed_cleanly(owner: Any) -> None:
    for path in ("/ws/nope/", "/ws/runs/abc/", "/"):
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        communicator.scope["user"] = owner
        assert await outcome(communicator) == CLOSE_UNKNOWN_PATH
        await communicator.disconnect()
