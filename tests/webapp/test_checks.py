"""The development SECRET_KEY is flagged until a real one is set."""

from __future__ import annotations

from webapp.core.checks import development_secret_key


def test_development_key_warns_with_a_fix(settings) -> None:
    settings.SECRET_KEY = settings.DEV_SECRET_KEY
    (warning,) = development_secret_key(None)
    assert warning.id == "groupwise.W001"
    assert "SECRET_KEY" in warning.msg and "secrets.token_urlsafe" in warning.hint


def test_own_key_is_quiet(settings) -> None:
    settings.SECRET_KEY = "a-long-random-production-key-0123456789-abcdefghijklmnop"
    assert development_secret_key(None) == []
