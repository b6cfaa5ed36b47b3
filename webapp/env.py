"""Typed readers of settings from the environment.

Each helper returns the embedded default when the variable is unset or empty, and raises
``ImproperlyConfigured`` naming the variable, the bad value and the expected form otherwise.
``docs/configuration.md`` lists every variable read through these helpers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str) -> str:
    """The variable as a string, or ``default``."""
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    """The variable as a boolean (1/0, true/false, yes/no, on/off), or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false or yes/no.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """The variable as an integer no smaller than ``minimum``, or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below its minimum {minimum}.")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """The variable as a float no smaller than ``minimum``, or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below its minimum {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """The variable as a comma-separated list (blank items dropped), or ``default``."""
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path | None, *, base: Path) -> Path | None:
    """The variable as an absolute path (relative ones resolve against ``base``), or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    """The variable as a URL whose scheme is one of ``schemes``, or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)} has scheme {scheme!r}: use one of {', '.join(schemes)}."
        )
    return value


# An absolute URL path of RFC 3986 segment characters, ending in a slash.
_URL_PREFIX = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+/)*")


def env_url_prefix(name: str, default: str) -> str:
    """The variable as a URL path prefix such as ``/protected/`` (absolute, ending in ``/``,
    no query, fragment, spaces or ``..``), or ``default``."""
    value = _raw(name)
    if value is None:
        return default
    if not _URL_PREFIX.fullmatch(value) or "/../" in value or "/./" in value:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a URL path prefix: use an absolute path that starts and "
            "ends with '/', e.g. /protected/."
        )
    return value


#: The production rule for signing keys; Django's own deploy check (security.W009) asks the same.
MIN_SECRET_KEY_LENGTH = 50


def env_secret_key(name: str, development_key: str, *, production: bool) -> str:
    """The signing key: ``development_key`` when unset, except in production, which needs its own.

    In production an unset variable, the development key or a short key (fewer than 50
    characters or fewer than 5 distinct ones) is an ``ImproperlyConfigured`` naming ``name``.
    """
    value = _raw(name)
    if not production:
        return development_key if value is None else value
    advice = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`"
    if value is None or value == development_key:
        raise ImproperlyConfigured(
            f"{name} is {'not set' if value is None else 'the built-in development key'} but "
            f"GROUPWISE_PRODUCTION=1 needs a long random {name}: set it, {advice}."
        )
    if len(value) < MIN_SECRET_KEY_LENGTH or len(set(value)) < 5:
        raise ImproperlyConfigured(
            f"{name} has {len(value)} characters ({len(set(value))} distinct): production needs "
            f"at least {MIN_SECRET_KEY_LENGTH} random characters, {advice}."
        )
    return value


@dataclass(frozen=True)
class Rate:
    """At most ``count`` events per ``seconds``; ``text`` is the value as written."""

    count: int
    seconds: int
    text: str


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def env_rate(name: str, default: str) -> Rate | None:
    """The variable as ``N/period`` (period: second, minute, hour, day, or ``<n>s``), or
    ``default``; ``off`` (or ``0``) means no limit and gives ``None``."""
    value = _raw(name) or default
    if value.lower() in ("off", "0", "none"):
        return None
    count_text, _, period = value.partition("/")
    period = period.strip().lower()
    try:
        count = int(count_text)
        seconds = (
            int(period[:-1]) if period.endswith("s") and period[:-1].isdigit() else _PERIODS[period]
        )
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: use N/period, e.g. 20/hour, 5/minute, 100/3600s "
            "or off."
        ) from None
    if count < 1 or seconds < 1:
        raise ImproperlyConfigured(
            f"{name}={value!r} must allow at least 1 per period of at least 1 s, or be off."
        )
    return Rate(count, seconds, value)


def database_from_url(
    name: str, default: str, *, base: Path, pool_size: int = 0, conn_max_age: int = 0
) -> dict[str, Any]:
    """Django's ``DATABASES['default']`` from a URL in the variable ``name``.

    ``sqlite:///var/db.sqlite3`` (relative to ``base``), ``sqlite:////abs/path.sqlite3`` and
    ``postgres://user:password@host:port/name?sslmode=require`` are understood.
    SQLite runs in WAL mode with a busy timeout and immediate transactions, so the web process and
    the worker can write to one file without "database is locked" errors.

    PostgreSQL connections come from a pool of at most ``pool_size`` per process when it is above
    0; otherwise each is kept ``conn_max_age`` seconds (0: one per request). Both at once are an
    ``ImproperlyConfigured`` naming ``DATABASE_POOL_SIZE`` and ``DATABASE_CONN_MAX_AGE``, the
    variables ``webapp.settings`` reads them from.
    """
    url = env_url(name, default, schemes=("sqlite", "postgres", "postgresql"))
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        raw_path = unquote(parts.path)
        if raw_path in ("", "/"):
            raise ImproperlyConfigured(
                f"{name}={url} names no file: use sqlite:///relative/path.sqlite3 "
                "or sqlite:////absolute/path.sqlite3."
            )
        relative = raw_path[1:]
        path = Path(relative) if Path(relative).is_absolute() else base / relative
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(path.with_name(f"test_{path.name}"))},
        }
    name_in_url = unquote(parts.path.lstrip("/"))
    if not name_in_url:
        raise ImproperlyConfigured(f"{name}={_redact(url)} names no database: add /dbname.")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}={_redact(url)} has an invalid port.") from None
    if pool_size and conn_max_age:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_SIZE={pool_size} with DATABASE_CONN_MAX_AGE={conn_max_age}: pooled "
            "connections go back to the pool after each request, so set one of them to 0."
        )
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if pool_size:
        # Under ASGI each request's sync code runs in a thread of its own, so a connection kept
        # in that thread (CONN_MAX_AGE > 0) is never used again: they piled up past PostgreSQL's
        # max_connections under bench/load.py ("too many clients already"), which is why
        # Django's docs say to use a pool there. The pool is per process and shared by its
        # threads: a request borrows a connection and returns it when it ends, instead of
        # opening one (6.5 ms on loopback, measured; more over TLS).
        options["pool"] = {"min_size": 1, "max_size": pool_size}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name_in_url,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": conn_max_age,
        # A kept connection the server has since closed (restart, idle timeout) is replaced
        # before a request uses it, instead of failing that request.
        "CONN_HEALTH_CHECKS": True,
    }


def _redact(url: str) -> str:
    """The URL with its password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
