"""`manage.py check --deploy` under the production settings, run as an operator runs it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.webapp.servers import REPO


def python(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run Python in the checkout with ``env`` on top of a clean environment (embedded database)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "CELERY_BROKER_URL")
        and not k.startswith(("SECURE_", "SESSION_", "CSRF_", "GROUPWISE_"))
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**base, "GROUPWISE_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return python(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)


def load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Only read the settings (what every process does first): quicker than a full check."""
    return python(tmp_path, ["-c", "import webapp.settings"], env)


def production(**env: str) -> dict[str, str]:
    return {
        "GROUPWISE_PRODUCTION": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "groupwise.example.org",
        **env,
    }


def test_production_settings_pass_the_deploy_check(tmp_path: Path) -> None:
    result = check_deploy(tmp_path, **production())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_embedded_defaults_are_flagged(tmp_path: Path) -> None:
    """The same check fails on the development profile: the test above can fail."""
    result = check_deploy(tmp_path)
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, result.stderr
    assert "groupwise.W001" in result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    """Weak keys are refused too: tests/webapp/test_env.py covers env_secret_key's rules."""
    env = production()
    assert load_settings(tmp_path, **env).returncode == 0
    del env["SECRET_KEY"]
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr, result.stderr


def test_production_refuses_debug(tmp_path: Path) -> None:
    result = load_settings(tmp_path, **production(DEBUG="1"))
    assert result.returncode != 0
    assert "DEBUG=1 with GROUPWISE_PRODUCTION=1" in result.stderr
