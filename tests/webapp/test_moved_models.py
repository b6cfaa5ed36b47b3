"""Sweeps and API tokens left the runs app for their own apps without losing a row: a database
from before the move (runs at 0004) migrates to the new state and finds the same rows, in the same
tables, under the new apps; their content types (and so permissions) follow them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

#: The apps the move touched; every other app stays at its latest migration.
MOVED = ("runs", "accounts", "sweeps")


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def before_the_move() -> list[tuple[str, str]]:
    others = [node for node in latest() if node[0] not in MOVED]
    return [("runs", "0004_drop_server_command"), *others]


def migrate(targets: list[tuple[str, str]]) -> Apps:
    """Migrate the test database to ``targets``; the models as they are there."""
    MigrationExecutor(connection).migrate(targets)
    # A fresh executor: the one that migrated still holds the graph it loaded before.
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def old_apps() -> Iterator[Apps]:
    try:
        yield migrate(before_the_move())
    finally:
        migrate(latest())


def test_a_sweep_and_a_token_from_before_the_move_are_found_after_it(old_apps: Apps) -> None:
    content_type = old_apps.get_model("contenttypes", "ContentType")
    # The database was created in the new state, then migrated back: the moves ran in reverse.
    assert content_type.objects.filter(app_label="runs", model="sweep").exists()
    assert not content_type.objects.filter(app_label="sweeps", model="sweep").exists()
    sweep_type = content_type.objects.get(app_label="runs", model="sweep")

    user = old_apps.get_model("auth", "User").objects.create(username="alice")
    run = old_apps.get_model("runs", "Run").objects.create(owner=user, name="r", recipe={})
    old_sweep: Any = old_apps.get_model("runs", "Sweep").objects.create(
        owner=user, run=run, recipe={"layout": {}}, sizes=[1, 2], status="finished"
    )
    old_token: Any = old_apps.get_model("runs", "ApiToken").objects.create(
        user=user, name="ci", digest="d" * 64
    )

    new_apps = migrate(latest())

    sweep = new_apps.get_model("sweeps", "Sweep").objects.get(pk=old_sweep.pk)
    assert (sweep.owner_id, sweep.run_id, sweep.sizes, sweep.status) == (
        user.pk,
        run.pk,
        [1, 2],
        "finished",
    )
    token = new_apps.get_model("accounts", "ApiToken").objects.get(pk=old_token.pk)
    assert (token.user_id, token.name, token.digest) == (user.pk, "ci", "d" * 64)
    moved = new_apps.get_model("contenttypes", "ContentType").objects.get(pk=sweep_type.pk)
    assert (moved.app_label, moved.model) == ("sweeps", "sweep")
