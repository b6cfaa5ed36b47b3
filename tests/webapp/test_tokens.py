"""API tokens: scopes (a read-only token cannot change anything), expiry, last use and its
address, the tokens page, and tokens on media files."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from tests.webapp.personas import client_for
from tests.webapp.test_personas import API_JSON, TABLE, Row, prepare, snapshot
from webapp.accounts.models import ApiToken

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def bearer(token: str, **extra: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", **extra)


def send(client: Client, row: Row, path: str) -> Any:
    if row.method == "GET":
        return client.get(path)
    return client.generic(row.method, path, json.dumps(row.payload or {}), API_JSON)


# Every DRF route of the personas table (the Swagger page is a page, behind the login).
API_ROWS = [row for row in TABLE if row.path.startswith("/api/") and row.route != "api-docs"]
UNSAFE = [row for row in API_ROWS if row.method not in ("GET", "HEAD", "OPTIONS")]
SAFE = [row for row in API_ROWS if row.method == "GET"]


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.mark.parametrize("row", UNSAFE, ids=[f"{r.method} {r.path}" for r in UNSAFE])
def test_a_read_token_is_refused_every_unsafe_call(owner: Any, row: Row, media: None) -> None:
    ids = prepare(row, owner)
    _row, token = ApiToken.issue(owner, "dash", scope=ApiToken.Scope.READ)
    before = snapshot()
    answer = send(bearer(token), row, row.path.format(**ids))
    assert answer.status_code == 403, answer.content[:300]
    detail = answer.json()["detail"]
    assert f"Token 'dash' is read-only: {row.method} needs a read-and-write token" in detail
    assert snapshot() == before, "a refused call changed something"


@pytest.mark.parametrize("row", SAFE, ids=[f"{r.method} {r.path}" for r in SAFE])
def test_a_read_token_reads_what_its_user_may(owner: Any, row: Row, media: None) -> None:
    ids = prepare(row, owner)
    _row, token = ApiToken.issue(owner, "dash", scope=ApiToken.Scope.READ)
    assert send(bearer(token), row, row.path.format(**ids)).status_code == row.owner


def test_a_write_token_may_change_things(
    owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _row, token = ApiToken.issue(owner, "ci")
    with django_capture_on_commit_callbacks(execute=False):
        answer = bearer(token).post("/api/runs/", {"preset": "tiny-color"}, content_type=API_JSON)
    assert answer.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_tokens_made_before_scopes_keep_full_access_and_never_expire(owner: Any) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0001_initial")])
    old = executor.loader.project_state([("accounts", "0001_initial")]).apps
    OldToken = old.get_model("accounts", "ApiToken")
    OldToken.objects.create(user_id=owner.pk, name="old", digest=ApiToken.digest_of("gw_old"))
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    token = ApiToken.objects.get(name="old")
    assert (token.scope, token.expires_at, token.last_used_from) == ("write", None, "")


def test_an_expired_token_is_a_401_that_says_so(owner: Any) -> None:
    _row, token = ApiToken.issue(owner, "old-ci", expires_at=timezone.now() - timedelta(seconds=1))
    answer = bearer(token).get("/api/runs/")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["detail"].startswith("Token 'old-ci' expired at ")
    _row, fresh = ApiToken.issue(owner, "ci", expires_at=timezone.now() + timedelta(hours=1))
    assert bearer(fresh).get("/api/runs/").status_code == 200


def test_a_revoked_or_unknown_token_is_a_401(owner: Any) -> None:
    answer = bearer("gw_nonsense").get("/api/runs/")
    assert answer.status_code == 401
    assert "Invalid or revoked token" in answer.json()["detail"]


def test_last_use_and_its_address_are_written_at_most_once_a_minute(
    owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [NOW]
    monkeypatch.setattr(timezone, "now", lambda: clock[0])
    row, token = ApiToken.issue(owner, "ci")
    assert bearer(token, REMOTE_ADDR="10.0.0.5").get("/api/runs/").status_code == 200
    row.refresh_from_db()
    assert (row.last_used_at, row.last_used_from) == (NOW, "10.0.0.5")
    # 59 s later from elsewhere: within the minute, nothing is written.
    clock[0] = NOW + timedelta(seconds=59)
    bearer(token, REMOTE_ADDR="10.0.0.6").get("/api/runs/")
    row.refresh_from_db()
    assert (row.last_used_at, row.last_used_from) == (NOW, "10.0.0.5")
    # 61 s after the recorded use: written again.
    clock[0] = NOW + timedelta(seconds=61)
    bearer(token, REMOTE_ADDR="10.0.0.6").get("/api/runs/")
    row.refresh_from_db()
    assert (row.last_used_at, row.last_used_from) == (clock[0], "10.0.0.6")


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(owner: Any, settings: Any) -> None:
    row, token = ApiToken.issue(owner, "ci")
    # The client wrote the first entry itself; the proxy appended the address it saw.
    forwarded = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}
    bearer(token, **forwarded).get("/api/runs/")
    row.refresh_from_db()
    assert row.last_used_from == "10.0.0.1"
    settings.GROUPWISE_TRUST_X_FORWARDED_FOR = True
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=None)
    bearer(token, **forwarded).get("/api/runs/")
    row.refresh_from_db()
    assert row.last_used_from == "203.0.113.9"


def test_the_page_makes_a_read_token_that_expires_and_lists_its_use(
    owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    page = client_for(owner).post(
        "/tokens/", {"name": "grafana", "scope": "read", "expires_in_days": "30"}
    )
    assert page.status_code == 200
    token = page.context["created"]
    row = ApiToken.objects.get(user=owner)
    assert (row.name, row.scope, row.expires_at) == ("grafana", "read", NOW + timedelta(days=30))
    assert row.digest == ApiToken.digest_of(token)
    bearer(token, REMOTE_ADDR="192.0.2.7").get("/api/runs/")
    listing = client_for(owner).get("/tokens/").content.decode()
    assert "read only" in listing
    assert (NOW + timedelta(days=30)).strftime("%Y-%m-%d %H:%M") in listing
    assert "192.0.2.7" in listing
    assert "expired" not in listing


def test_the_page_marks_an_expired_token(owner: Any) -> None:
    ApiToken.issue(owner, "old", expires_at=timezone.now() - timedelta(days=1))
    assert 'badge-error">expired' in client_for(owner).get("/tokens/").content.decode()


def test_a_token_made_without_choices_is_read_write_and_never_expires(owner: Any) -> None:
    client_for(owner).post("/tokens/", {"name": "ci"})
    row = ApiToken.objects.get(user=owner)
    assert (row.scope, row.expires_at) == ("write", None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scope", "admin", "scope 'admin': use read or write"),
        ("expires_in_days", "0", "give 1 to 3650 days, or never"),
        ("expires_in_days", "99999", "give 1 to 3650 days, or never"),
        ("expires_in_days", "²", "give 1 to 3650 days, or never"),
        ("expires_in_days", "-3", "give 1 to 3650 days, or never"),
    ],
)
def test_bad_choices_make_no_token_and_say_why(
    owner: Any, field: str, value: str, message: str
) -> None:
    page = client_for(owner).post("/tokens/", {"name": "ci", field: value})
    assert page.status_code == 400
    assert message in html.unescape(page.content.decode())
    assert page.context["created"] is None
    assert ApiToken.objects.count() == 0


@pytest.mark.parametrize("revoke", ["abc", "²", "9" * 30, ""])
def test_a_revoke_that_names_no_token_changes_nothing(owner: Any, revoke: str) -> None:
    ApiToken.issue(owner, "ci")
    answer = client_for(owner).post("/tokens/", {"revoke": revoke})
    assert answer.status_code == 302
    assert ApiToken.objects.count() == 1


def test_one_cannot_revoke_another_users_token(owner: Any, other: Any) -> None:
    row, _token = ApiToken.issue(other, "theirs")
    client_for(owner).post("/tokens/", {"revoke": str(row.pk)})
    assert ApiToken.objects.filter(pk=row.pk).exists()
    client_for(other).post("/tokens/", {"revoke": str(row.pk)})
    assert not ApiToken.objects.filter(pk=row.pk).exists()


# --- Media files take the same tokens --------------------------------------------------------


@pytest.fixture
def image(owner: Any, media: None) -> str:
    from django.conf import settings

    from tests.webapp.personas import make_run

    run = make_run(owner)
    folder = Path(settings.MEDIA_ROOT) / "runs" / str(run.pk) / "rollout"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"png bytes")
    return f"/media/runs/{run.pk}/rollout/a.png"


def test_media_answer_a_token_of_the_owner_read_only_included(owner: Any, image: str) -> None:
    for scope in ApiToken.Scope.values:
        _row, token = ApiToken.issue(owner, scope, scope=scope)
        answer = bearer(token).get(image)
        assert answer.status_code == 200
        assert answer.getvalue() == b"png bytes"
        assert "Authorization" in answer["Vary"]


def test_media_refuse_other_users_and_bad_tokens(owner: Any, other: Any, image: str) -> None:
    _row, theirs = ApiToken.issue(other, "theirs")
    assert bearer(theirs).get(image).status_code == 404
    unknown = bearer("gw_nonsense").get(image)
    assert unknown.status_code == 401
    assert "Invalid or revoked token" in unknown.content.decode()
    _row, old = ApiToken.issue(owner, "old", expires_at=timezone.now() - timedelta(seconds=1))
    expired = bearer(old).get(image)
    assert expired.status_code == 401
    assert "expired" in expired.content.decode()
    # Neither session nor token: the login page, as before.
    anonymous = Client().get(image)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
