"""The typed environment readers: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import (
    Rate,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_rate,
    env_secret_key,
    env_str,
    env_url,
    env_url_prefix,
)


def test_unset_and_blank_give_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_X", raising=False)
    assert env_str("GW_X", "d") == "d"
    monkeypatch.setenv("GW_X", "  ")
    assert env_bool("GW_X", True) is True
    assert env_int("GW_X", 7) == 7
    assert env_list("GW_X", ["a"]) == ["a"]


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("yes", True), ("off", False), ("0", False)]
)
def test_env_bool(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("GW_FLAG", raw)
    assert env_bool("GW_FLAG", not expected) is expected


def test_env_bool_rejects_other_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_env_int_and_float(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_N", "12")
    assert env_int("GW_N", 0, minimum=1) == 12
    monkeypatch.setenv("GW_N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="GW_N='twelve' is not an integer"):
        env_int("GW_N", 0)
    monkeypatch.setenv("GW_N", "0")
    with pytest.raises(ImproperlyConfigured, match="GW_N=0 is below its minimum 1"):
        env_int("GW_N", 5, minimum=1)
    monkeypatch.setenv("WORKER_HEARTBEAT_SECONDS", "0.25")
    assert env_float("WORKER_HEARTBEAT_SECONDS", 5.0, minimum=0.1) == 0.25
    monkeypatch.setenv("WORKER_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(
        ImproperlyConfigured, match="WORKER_HEARTBEAT_SECONDS='soon' is not a number"
    ):
        env_float("WORKER_HEARTBEAT_SECONDS", 5.0)


def test_env_list_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, ,b.example,")
    assert env_list("ALLOWED_HOSTS", []) == ["a.example", "b.example"]


def test_env_path_resolves_relative_to_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MEDIA_ROOT", "media")
    assert env_path("MEDIA_ROOT", None, base=tmp_path) == tmp_path / "media"
    monkeypatch.setenv("MEDIA_ROOT", "/srv/media")
    assert env_path("MEDIA_ROOT", None, base=tmp_path) == Path("/srv/media")


def test_env_url_checks_scheme_and_hides_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "kafka://user:s3cret@host/")
    with pytest.raises(ImproperlyConfigured) as info:
        env_url("CELERY_BROKER_URL", "", schemes=("redis", "amqp"))
    assert "CELERY_BROKER_URL" in str(info.value)
    assert "use one of redis, amqp" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_sqlite_url_gives_wal_and_busy_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///var/app.sqlite3")
    db = database_from_url("DATABASE_URL", "", base=tmp_path)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "var/app.sqlite3")
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] >= 5
    monkeypatch.setenv("DATABASE_URL", "sqlite:////abs/app.sqlite3")
    assert database_from_url("DATABASE_URL", "", base=tmp_path)["NAME"] == "/abs/app.sqlite3"


def test_postgres_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "DATABASE_URL", "postgres://gw:p%40ss@db.internal:6543/groupwise?sslmode=require"
    )
    db = database_from_url("DATABASE_URL", "", base=tmp_path)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("groupwise", "gw", "p@ss")
    assert (db["HOST"], db["PORT"]) == ("db.internal", "6543")
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (0, True)


def test_postgres_pool_or_kept_connections(tmp_path: Path) -> None:
    url = "postgres://u@h:5432/d?sslmode=require"
    pooled = database_from_url("X", url, base=tmp_path, pool_size=8)
    assert pooled["OPTIONS"] == {"sslmode": "require", "pool": {"min_size": 1, "max_size": 8}}
    assert pooled["CONN_MAX_AGE"] == 0
    kept = database_from_url("X", url, base=tmp_path, conn_max_age=60)
    assert "pool" not in kept["OPTIONS"]
    assert (kept["CONN_MAX_AGE"], kept["CONN_HEALTH_CHECKS"]) == (60, True)
    # SQLite has neither: one file, opened by each thread.
    sqlite = database_from_url("X", "sqlite:///db.sqlite3", base=tmp_path, pool_size=8)
    assert "pool" not in sqlite["OPTIONS"]
    assert "CONN_MAX_AGE" not in sqlite


def test_a_pool_with_kept_connections_names_both_variables(tmp_path: Path) -> None:
    with pytest.raises(
        ImproperlyConfigured,
        match=r"DATABASE_POOL_SIZE=4 with DATABASE_CONN_MAX_AGE=60: .* set one of them to 0",
    ):
        database_from_url("X", "postgres://u@h/d", base=tmp_path, pool_size=4, conn_max_age=60)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://root@localhost/x", "use one of sqlite, postgres, postgresql"),
        ("postgres://u@host:5432/", "names no database"),
        ("sqlite://", "names no file"),
        ("postgres://u@host:notaport/db", "invalid port"),
    ],
)
def test_bad_database_urls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, fragment: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL") as info:
        database_from_url("DATABASE_URL", "", base=tmp_path)
    assert fragment in str(info.value)


def test_default_sqlite_database_runs_in_wal_mode(db: None) -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite pragmas apply to the embedded default only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


DEV_KEY = "dev-key"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "SECRET_KEY is not set but GROUPWISE_PRODUCTION=1 needs"),
        (DEV_KEY, "SECRET_KEY is the built-in development key"),
        ("k" * 49, "SECRET_KEY has 49 characters (1 distinct): production needs at least 50"),
        ("abab" * 20, "SECRET_KEY has 80 characters (2 distinct)"),
    ],
)
def test_production_needs_a_real_secret_key(
    monkeypatch: pytest.MonkeyPatch, value: str | None, fragment: str
) -> None:
    if value is None:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("SECRET_KEY", value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(fragment)):
        env_secret_key("SECRET_KEY", DEV_KEY, production=True)
    # Off production the same values are accepted, and unset means the development key.
    assert env_secret_key("SECRET_KEY", DEV_KEY, production=False) == (value or DEV_KEY)


def test_a_long_random_key_is_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
    monkeypatch.setenv("SECRET_KEY", key)
    assert env_secret_key("SECRET_KEY", DEV_KEY, production=True) == key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20/hour", Rate(20, 3600, "20/hour")),
        ("5/Minute", Rate(5, 60, "5/Minute")),
        ("1/day", Rate(1, 86400, "1/day")),
        ("7/90s", Rate(7, 90, "7/90s")),
        ("off", None),
        ("0", None),
    ],
)
def test_rates(monkeypatch: pytest.MonkeyPatch, value: str, expected: Rate | None) -> None:
    monkeypatch.setenv("GW_RATE", value)
    assert env_rate("GW_RATE", "3/hour") == expected


@pytest.mark.parametrize("value", ["many/hour", "5/fortnight", "5", "0/hour", "5/0s"])
def test_bad_rates_name_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GW_RATE", value)
    with pytest.raises(ImproperlyConfigured, match=f"GW_RATE={value!r}"):
        env_rate("GW_RATE", "3/hour")


def test_rate_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_RATE", raising=False)
    assert env_rate("GW_RATE", "3/hour") == Rate(3, 3600, "3/hour")


@pytest.mark.parametrize("raw", ["/protected/", "/", "/media-internal/v1/", " /x/ "])
def test_env_url_prefix_takes_absolute_paths_ending_in_a_slash(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("GROUPWISE_ACCEL_REDIRECT", raw)
    assert env_url_prefix("GROUPWISE_ACCEL_REDIRECT", "") == raw.strip()


@pytest.mark.parametrize(
    "raw",
    ["protected/", "/protected", "/a b/", "/x/?q=1/", "/x#y/", "/../", "/a/./b/", "http://x/"],
)
def test_env_url_prefix_names_the_variable_on_anything_else(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("GROUPWISE_ACCEL_REDIRECT", raw)
    with pytest.raises(ImproperlyConfigured, match=r"GROUPWISE_ACCEL_REDIRECT=.*starts and ends"):
        env_url_prefix("GROUPWISE_ACCEL_REDIRECT", "")


def test_env_url_prefix_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPWISE_ACCEL_REDIRECT", raising=False)
    assert env_url_prefix("GROUPWISE_ACCEL_REDIRECT", "") == ""
