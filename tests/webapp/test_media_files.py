"""Run media as a browser and nginx see it: whole files with their validators, byte ranges
(206 / 416), conditional requests, X-Accel-Redirect, and another user's file a 404 either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.utils.http import http_date

from tests.webapp.personas import client_for, make_run
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

#: 3,000 bytes whose every position is recognisable: byte i is i mod 251 (a prime, so no
#: chunk boundary lines up with a repeat).
PAYLOAD = bytes(i % 251 for i in range(3000))


@pytest.fixture
def image(owner: Any, settings: Any, tmp_path: Path) -> tuple[Run, str, Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    run = make_run(owner)
    folder = tmp_path / "media" / "runs" / str(run.pk) / "step-1"
    folder.mkdir(parents=True)
    path = folder / "g0 s1.png"
    path.write_bytes(PAYLOAD)
    return run, f"/media/runs/{run.pk}/step-1/g0%20s1.png", path


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_whole_file_with_its_type_length_and_validators(image: Any) -> None:
    run, url, path = image
    response = client_for(run.owner).get(url)
    assert response.status_code == 200
    assert body(response) == PAYLOAD
    assert response["Content-Type"] == "image/png"
    assert response["Content-Length"] == "3000"
    assert response["Accept-Ranges"] == "bytes"
    assert response["Last-Modified"] == http_date(int(path.stat().st_mtime))
    stat = path.stat()
    assert response["ETag"] == f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=2990-", 2990, 3000),
        ("bytes=-10", 2990, 3000),
        ("bytes=100-99999", 100, 3000),  # the end clipped to the file's last byte, 2999
    ],
)
def test_a_range_is_a_206_with_its_bytes(image: Any, header: str, start: int, stop: int) -> None:
    run, url, _ = image
    response = client_for(run.owner).get(url, HTTP_RANGE=header)
    assert response.status_code == 206
    assert body(response) == PAYLOAD[start:stop]
    assert response["Content-Range"] == f"bytes {start}-{stop - 1}/3000"
    assert response["Content-Length"] == str(stop - start)
    assert response["Content-Type"] == "image/png"


@pytest.mark.parametrize("header", ["bytes=3000-", "bytes=5000-6000", "bytes=-0"])
def test_an_unsatisfiable_range_is_a_416_naming_the_size(image: Any, header: str) -> None:
    run, url, _ = image
    response = client_for(run.owner).get(url, HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */3000"


@pytest.mark.parametrize("header", ["bytes=9-3", "bytes=x-", "lines=1-2", "bytes=0-1,4-5"])
def test_a_malformed_or_multiple_range_is_ignored(image: Any, header: str) -> None:
    run, url, _ = image
    response = client_for(run.owner).get(url, HTTP_RANGE=header)
    assert response.status_code == 200 and body(response) == PAYLOAD


def test_if_range_and_revalidation(image: Any) -> None:
    run, url, _ = image
    client = client_for(run.owner)
    first = client.get(url)
    etag, modified = first["ETag"], first["Last-Modified"]
    same = client.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=etag)
    assert same.status_code == 206 and body(same) == PAYLOAD[:10]
    by_date = client.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=modified)
    assert by_date.status_code == 206
    # The file changed since the client's copy: the range is dropped, the new file sent.
    stale = client.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"0-0"')
    assert stale.status_code == 200 and body(stale) == PAYLOAD
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert client.get(url, HTTP_IF_MODIFIED_SINCE=modified).status_code == 304


def test_another_users_media_is_a_404_whatever_the_range(image: Any, other: Any) -> None:
    _, url, _ = image
    for headers in ({}, {"HTTP_RANGE": "bytes=0-9"}, {"HTTP_RANGE": "bytes=99999-"}):
        assert client_for(other).get(url, **headers).status_code == 404


def test_behind_nginx_the_answer_is_an_internal_redirect(
    image: Any, other: Any, settings: Any
) -> None:
    run, url, _ = image
    settings.GROUPWISE_ACCEL_REDIRECT = "/protected/"
    response = client_for(run.owner).get(url, HTTP_RANGE="bytes=0-9")
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == f"/protected/runs/{run.pk}/step-1/g0%20s1.png"
    assert "Content-Type" not in response
    refused = client_for(other).get(url)
    assert refused.status_code == 404 and "X-Accel-Redirect" not in refused
    missing = client_for(run.owner).get(f"/media/runs/{run.pk}/step-1/missing.png")
    assert missing.status_code == 404 and "X-Accel-Redirect" not in missing
