"""Run pages: the New run form (same errors as the API), uploads, media paths, tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from engine.presets import PRESETS
from tests.webapp.personas import client_for, make_run
from webapp.accounts.models import ApiToken
from webapp.runs.forms import NewRunForm
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def form_data(preset: str = "tiny-color", **changes: Any) -> dict[str, Any]:
    """What the browser posts for an untouched form of ``preset``, with ``changes``."""
    form = NewRunForm(preset=preset)
    data = {name: form.initial.get(name, "") for name in form.fields if name != "prompt_file"}
    data = {k: v for k, v in data.items() if v is not False}
    data.update(changes)
    return data


def test_new_run_page_shows_preset_values(owner: Any) -> None:
    page = client_for(owner).get("/runs/new/?preset=ocr-sd35")
    assert page.status_code == 200
    assert b'value="ocr-sd35" selected' in page.content
    assert b"n_samples_per_prompt" in page.content


def test_form_error_is_on_its_field_with_the_same_message_as_the_api(owner: Any) -> None:
    client = client_for(owner)
    page = client.post("/runs/new/", form_data(layout__diffusion_microgroup_size="3"))
    assert page.status_code == 200
    errors = page.context["form"].errors
    api = client.post(
        "/api/runs/",
        data=json.dumps({"preset": "tiny-color", "overrides": {"diffusion_microgroup_size": 3}}),
        content_type="application/json",
    ).json()
    assert errors["layout__diffusion_microgroup_size"] == api["layout.diffusion_microgroup_size"]
    assert Run.objects.count() == 0


def test_every_form_error_at_once(owner: Any) -> None:
    page = client_for(owner).post(
        "/runs/new/",
        form_data(layout__diffusion_microgroup_size="3", optimiser__lr="-1", rewards="[]"),
    )
    errors = page.context["form"].errors
    assert {"layout__diffusion_microgroup_size", "optimiser__lr", "rewards"} <= set(errors)


def test_valid_form_launches_and_lands_on_the_run_page(
    owner: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(owner).post(
            "/runs/new/", form_data(name="from the form", optimiser__lr="0.002")
        )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.name == "from the form" and run.owner == owner
    assert run.recipe["optimiser"]["lr"] == 0.002
    assert len(callbacks) == 1


def test_uploaded_prompts_replace_the_inline_ones(
    owner: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    upload = SimpleUploadedFile("prompts.txt", b"a red image\n\n a teal image \n")
    with django_capture_on_commit_callbacks(execute=False):
        client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": upload})
    assert Run.objects.get().recipe["data"]["prompts"] == ["a red image", "a teal image"]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("p.txt", b"\xff\xfe\x00bad", "is not UTF-8"),
        ("p.txt", b"\n  \n", "holds no prompts"),
        ("p.jsonl", b'{"prompt": "ok"}\n{nope', "line 2 is not JSON"),
        ("p.jsonl", b'{"text": "x"}', 'line 1 has no "prompt" string'),
    ],
)
def test_bad_prompt_files_are_explained(
    owner: Any, name: str, content: bytes, fragment: str
) -> None:
    page = client_for(owner).post(
        "/runs/new/", {**form_data(), "prompt_file": SimpleUploadedFile(name, content)}
    )
    assert page.status_code == 200
    assert fragment in " ".join(page.context["form"].errors["prompt_file"])


def test_prompt_file_size_limit(owner: Any, settings: Any) -> None:
    settings.GROUPWISE_MAX_UPLOAD_BYTES = 10
    client = client_for(owner)
    page = client.post(
        "/runs/new/", {**form_data(), "prompt_file": SimpleUploadedFile("p.txt", b"x" * 11)}
    )
    assert "p.txt is 11 bytes: the limit is 10 bytes" in " ".join(
        page.context["form"].errors["prompt_file"]
    )
    fits = client.post(
        "/runs/new/", {**form_data(), "prompt_file": SimpleUploadedFile("p.txt", b"x" * 10)}
    )
    assert fits.status_code == 302


def test_a_body_too_large_for_any_form_is_refused_unread(owner: Any, settings: Any) -> None:
    settings.GROUPWISE_MAX_UPLOAD_BYTES = 10
    big = SimpleUploadedFile("p.txt", b"x" * (forms_room() + 11))
    response = client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": big})
    assert response.status_code == 413
    assert b"GROUPWISE_MAX_UPLOAD_BYTES" in response.content
    assert Run.objects.count() == 0


def forms_room() -> int:
    from webapp.runs.views import FORM_FIELDS_BYTES

    return FORM_FIELDS_BYTES


@pytest.mark.parametrize(
    ("name", "content_type", "content", "fragment"),
    [
        ("p.png", "image/png", b"a red image", "is not a prompt file"),
        ("prompts", "text/plain", b"a red image", "is not a prompt file"),
        ("p.txt.exe", "text/plain", b"a red image", "is not a prompt file"),
        ("p.txt", "image/png", b"a red image", "was sent as image/png"),
        ("p.txt", "text/plain", b"a red\x00image", "holds NUL bytes"),
    ],
)
def test_prompt_files_must_be_text_files(
    owner: Any, name: str, content_type: str, content: bytes, fragment: str
) -> None:
    upload = SimpleUploadedFile(name, content, content_type=content_type)
    page = client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": upload})
    assert page.status_code == 200
    assert fragment in " ".join(page.context["form"].errors["prompt_file"])
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("P.TXT", "text/plain"), ("p.jsonl", "application/octet-stream"), ("p.jsonl", "")],
)
def test_text_prompt_files_are_accepted_whatever_the_browser_calls_them(
    owner: Any, name: str, content_type: str, django_capture_on_commit_callbacks: Any
) -> None:
    content = b'{"prompt": "a teal image"}' if name.endswith("jsonl") else b"a teal image"
    upload = SimpleUploadedFile(name, content, content_type=content_type)
    with django_capture_on_commit_callbacks(execute=False):
        client_for(owner).post("/runs/new/", {**form_data(), "prompt_file": upload})
    assert Run.objects.get().recipe["data"]["prompts"] == ["a teal image"]


def test_ocr_prompts_without_quotes_are_listed_before_launch(owner: Any) -> None:
    data = form_data("ocr-sd35")
    upload = SimpleUploadedFile("p.txt", b'a sign that says "open"\na sign with no target\n')
    page = client_for(owner).post("/runs/new/", {**data, "prompt_file": upload})
    message = " ".join(page.context["form"].errors["prompt_file"])
    assert "1 line(s) of p.txt need fixing" in message
    assert "'a sign with no target' has no text in double quotes for the ocr reward" in message


def test_media_outside_the_run_folder_is_404(
    owner: Any, other: Any, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    mine, theirs = make_run(owner), make_run(other)
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "media" / "runs" / str(mine.pk)).mkdir(parents=True)
    (tmp_path / "media" / "runs" / str(theirs.pk)).mkdir(parents=True)
    (tmp_path / "media" / "runs" / str(theirs.pk) / "a.png").write_bytes(b"png")
    (tmp_path / "media" / "runs" / str(mine.pk) / "link.png").symlink_to(tmp_path / "secret.txt")
    client = client_for(owner)
    for path in (
        f"/media/runs/{mine.pk}/../../../secret.txt",
        # Normalised, this is another run's file: refused, not served under the wrong run.
        f"/media/runs/{mine.pk}/../{theirs.pk}/a.png",
        f"/media/runs/{mine.pk}/%2e%2e/{theirs.pk}/a.png",
        f"/media/runs/{mine.pk}//{tmp_path}/secret.txt",
        f"/media/runs/{mine.pk}/./link.png",
        f"/media/runs/{mine.pk}/link.png",
        f"/media/runs/{mine.pk}/missing.png",
        "/media/other/file.png",
    ):
        assert client.get(path).status_code == 404, path
    served = client_for(other).get(f"/media/runs/{theirs.pk}/a.png")
    assert b"".join(served.streaming_content) == b"png"


def test_page_actions(owner: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(owner)
    run = make_run(owner)
    client.post(f"/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    page = client.post(f"/runs/{run.pk}/cancel/", follow=True)
    assert b"only queued or running runs can be cancelled" in page.content
    with django_capture_on_commit_callbacks(execute=False):
        client.post(f"/runs/{run.pk}/resume/")
        clone = client.post(f"/runs/{run.pk}/clone/")
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert clone["Location"] == f"/runs/{Run.objects.latest('pk').pk}/"


def test_run_list_shows_own_runs(owner: Any, other: Any) -> None:
    make_run(owner, name="mine-visible")
    make_run(other, name="theirs-hidden")
    page = client_for(owner).get("/runs/")
    assert b"mine-visible" in page.content and b"theirs-hidden" not in page.content


def test_tokens_are_shown_once_and_revocable_by_their_owner_only(owner: Any, other: Any) -> None:
    page = client_for(owner).post("/tokens/", {"name": "ci"})
    token = page.context["created"]
    assert token.startswith("gw_") and token.encode() in page.content
    row = ApiToken.objects.get()
    assert row.digest == ApiToken.digest_of(token) and token not in row.digest
    assert token.encode() not in client_for(owner).get("/tokens/").content
    client_for(other).post("/tokens/", {"revoke": row.pk})
    assert ApiToken.objects.filter(pk=row.pk).exists()
    client_for(owner).post("/tokens/", {"revoke": row.pk})
    assert not ApiToken.objects.exists()


def test_every_preset_renders_a_valid_untouched_form(owner: Any) -> None:
    for name in PRESETS:
        form = NewRunForm(form_data(name), preset=name)
        assert form.is_valid(), (name, form.errors)
        assert form.built == PRESETS[name].recipe
