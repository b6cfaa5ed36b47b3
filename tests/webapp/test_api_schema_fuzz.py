"""schemathesis against the API's own OpenAPI schema (/api/schema/), with a real token.

Every operation gets a few generated requests, valid and invalid, sent in-process through the
WSGI application; no answer may be a 5xx, and every answer must match the schema: a documented
status code, content type, headers and body. Bounded and derandomized, so it is quick and
repeatable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.renderers import JSONRenderer
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.webapp.personas import make_run
from webapp.accounts.models import ApiToken
from webapp.runs.models import Event, Run, Sample

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def token(owner: Any) -> str:
    return ApiToken.issue(owner, "schemathesis")[1]


#: The owner's run's name: text no answer to anyone else may contain.
SECRET_NAME = "owner-only-run-4c1f"


@pytest.fixture
def owned_run(owner: Any) -> Run:
    """A run with an event and a sample, so the run's sub-resources have something to show."""
    run = make_run(owner, status=Run.Status.RUNNING, name=SECRET_NAME)
    Event.objects.create(
        run=run, seq=1, type="log_line", payload={"message": "hello"}, time=run.created_at
    )
    Sample.objects.create(
        run=run, step=0, rollout_index=0, group_index=0, prompt="a red image",
        index_in_group=0, image="runs/1/a.png", thumbnail="runs/1/a.thumb.png", reward=0.5,
        components={"color": 0.5}, advantage=0.0, seed=1,
    )  # fmt: skip
    return run


@pytest.fixture
def wsgi_app(db: None) -> Iterator[Any]:
    """The WSGI application on the test database. Like Django's test client, requests must not
    close the connection at their end: it holds the test's transaction."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def served_schema() -> dict[str, Any]:
    """What /api/schema/ serves, built by the same drf-spectacular generator (collection runs
    before any test database exists, so it cannot be fetched with a token yet)."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(JSONRenderer().render(generated))


schema = schemathesis.openapi.from_dict(served_schema())


def test_the_fuzzed_schema_is_the_one_served(owner: Any, token: str) -> None:
    response = Client().get("/api/schema/?format=json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json() == served_schema()


@schema.parametrize()
@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Any, wsgi_app: Any, token: str, owned_run: Run) -> None:
    if "id" in (case.path_parameters or {}):
        # A random id is a 404; the owner's run exercises the real answers.
        case.path_parameters["id"] = owned_run.pk
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, app=wsgi_app
    )


FUZZ = settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@FUZZ
def test_another_user_gets_nothing_of_the_owners(
    case: Any, wsgi_app: Any, other: Any, owned_run: Run
) -> None:
    # The same requests from a user who owns nothing: aimed at the owner's run, they must be
    # answered as if it did not exist, and no answer may hold any of it.
    if "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = owned_run.pk
    token = ApiToken.issue(other, "fuzz")[1]
    response = case.call(headers={"Authorization": f"Bearer {token}"}, app=wsgi_app)
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
    assert SECRET_NAME not in response.text
    # OPTIONS describes the endpoint (DRF's metadata), never a run: that may answer 200.
    if "id" in (case.path_parameters or {}) and response.request.method != "OPTIONS":
        assert response.status_code not in range(200, 300), response.text[:200]


@schema.parametrize()
@FUZZ
def test_anonymous_requests_are_refused(case: Any, wsgi_app: Any, owned_run: Run) -> None:
    if "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = owned_run.pk
    response = case.call(app=wsgi_app)
    case.validate_response(response, checks=[not_a_server_error])
    # DRF answers an unknown ?format= with 404 before it authenticates: about the format, not
    # about any run.
    if response.status_code == 404:
        assert json.loads(response.text) == {"detail": "Not found."}
        assert case.query and "format" in case.query
    else:
        assert response.status_code == 401, response.text[:200]
    assert SECRET_NAME not in response.text
