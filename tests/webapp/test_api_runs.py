"""The REST API: auth, validation errors, transitions, events, samples, metrics.

Who may call what is in test_personas.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.webapp.engine_events import rollout, store, train
from tests.webapp.personas import client_for, make_run
from webapp.accounts.models import ApiToken
from webapp.runs.models import Event, Run, Sample

pytestmark = pytest.mark.django_db

MICROGROUP_3 = (
    "n_samples_per_prompt=8 is not a multiple of diffusion_microgroup_size=3: use 1, 2, 4 or 8"
)


def post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_anonymous_gets_401_with_the_scheme(client: Client) -> None:
    response = client.get("/api/runs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/schema/").status_code == 401


def test_token_authentication(client: Client, owner: Any) -> None:
    _row, token = ApiToken.issue(owner, "ci")
    ok = client.get("/api/runs/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    assert ApiToken.objects.get(name="ci").last_used_at is not None
    assert client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    bad = client.get("/api/runs/", HTTP_AUTHORIZATION="Bearer gw_nope")
    assert bad.status_code == 401
    assert "revoked" in bad.json()["detail"]
    assert client.get("/api/runs/", HTTP_AUTHORIZATION="Bearer a b").status_code == 401
    ApiToken.objects.all().delete()
    assert client.get("/api/runs/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_create_from_preset_with_overrides(
    owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for(owner)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(
            client,
            "/api/runs/",
            {"name": "mine", "preset": "tiny-color", "overrides": {"lr": 0.002, "max_steps": 4}},
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["owner"] == "owner" and body["name"] == "mine"
    assert body["recipe"]["optimiser"]["lr"] == 0.002
    assert body["max_steps"] == 4
    assert len(callbacks) == 1, "the training task is enqueued once the row is committed"


def test_create_from_a_whole_recipe(owner: Any, django_capture_on_commit_callbacks: Any) -> None:
    recipe = make_run(owner).recipe
    with django_capture_on_commit_callbacks(execute=False):
        response = post(client_for(owner), "/api/runs/", {"name": "r", "recipe": recipe})
    assert response.status_code == 201
    assert response.json()["recipe"] == recipe


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            {"preset": "tiny-color", "overrides": {"diffusion_microgroup_size": 3}},
            "layout.diffusion_microgroup_size",
            MICROGROUP_3,
        ),
        ({"preset": "nope"}, "preset", "use one of tiny-color"),
        ({}, "preset", "give either a preset name or a whole recipe"),
        ({"preset": "tiny-color", "recipe": {}}, "preset", "either"),
        (
            {"preset": "tiny-color", "overrides": {"no_such_setting": 1}},
            "no_such_setting",
            "no setting is named",
        ),
        ({"preset": "tiny-color", "overrides": [1, 2]}, "overrides", "JSON object"),
        ({"recipe": "text"}, "recipe", "JSON object"),
        ({"recipe": {"layout": {"bogus": 1}}}, "layout.bogus", ""),
    ],
)
def test_invalid_create_is_400_with_field_errors(
    owner: Any,
    body: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    response = post(client_for(owner), "/api/runs/", body)
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert fragment in " ".join(errors[field])
    assert Run.objects.count() == 0


def test_malformed_json_is_400(owner: Any) -> None:
    response = client_for(owner).post("/api/runs/", data="{", content_type="application/json")
    assert response.status_code == 400


def test_every_problem_at_once(owner: Any) -> None:
    response = post(
        client_for(owner),
        "/api/recipes/validate/",
        {"preset": "tiny-color", "overrides": {"diffusion_microgroup_size": 3, "lr": -1}},
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["valid"] is False
    fields = {p["field"] for p in answer["problems"]}
    assert {"layout.diffusion_microgroup_size", "optimiser.lr"} <= fields


def test_validate_and_layout_of_a_valid_recipe(owner: Any) -> None:
    client = client_for(owner)
    answer = post(client, "/api/recipes/validate/", {"preset": "tiny-color"}).json()
    assert answer["valid"] is True
    # tiny-color: P=4 prompts x G=8 samples, M=8 -> one request per prompt.
    assert answer["layout"]["samples_per_rollout"] == 32
    assert answer["layout"]["requests_per_rollout"] == 4
    layout = post(client, "/api/recipes/layout/", {"preset": "tiny-color"}).json()
    assert layout["samples_per_rollout"] == 32
    bad = post(
        client,
        "/api/recipes/layout/",
        {"preset": "tiny-color", "overrides": {"diffusion_microgroup_size": 3}},
    )
    assert bad.status_code == 400


def test_the_layout_answers_hold_the_memory_plan(owner: Any) -> None:
    client = client_for(owner)
    body = {"preset": "ocr-qwen-image-2gpu"}
    memory = post(client, "/api/recipes/layout/", body).json()["memory"]
    validated = post(client, "/api/recipes/validate/", body).json()["layout"]["memory"]
    assert memory == validated
    assert memory["fits"] is True and memory["gpu_memory_gb"] == 80.0
    assert (memory["peak_phase"], memory["peak_while"]) == ("rollout", "generating")
    items = {item["name"]: item for item in memory["items"]}
    # 20.43 B bf16 weights over 2 FSDP ranks plus two gathered blocks of 339.8 M: 21.79 GB.
    assert items["DiT weights"]["gb"] == 21.79
    assert items["text encoders"]["phase"] == "rollout"
    counted = sum(item["gb"] for item in memory["items"] if item["counted"])
    assert memory["total_gb"] == pytest.approx(counted, abs=0.05)


def test_an_oversize_recipe_is_refused_with_the_fixes(owner: Any) -> None:
    client = client_for(owner)
    body = {
        "preset": "ocr-qwen-image-2gpu",
        "overrides": {"gradient_checkpointing": False, "num_gpus": 1, "gpu_memory_gb": 40},
    }
    answer = post(client, "/api/recipes/validate/", body).json()
    assert answer["valid"] is False
    (problem,) = answer["problems"]
    assert problem["field"] == "layout.gpu_memory_gb"
    assert "to fit, in order of cost: layout.gradient_checkpointing true (-" in problem["message"]
    assert post(client, "/api/recipes/layout/", body).status_code == 400


def test_presets_list(owner: Any) -> None:
    presets = {p["name"]: p for p in client_for(owner).get("/api/presets/").json()}
    assert "tiny-color" in presets and "ocr-qwen-image-2gpu" in presets
    # ocr-qwen-image-2gpu: P=16, G=16 -> 256 samples per rollout.
    assert presets["ocr-qwen-image-2gpu"]["layout"]["samples_per_rollout"] == 256
    # Every preset fits the 80 GB GPU it names.
    assert all(p["layout"]["memory"]["fits"] for p in presets.values())


def test_list_shows_own_runs_staff_all_and_filters(owner: Any, other: Any, staff: Any) -> None:
    mine = make_run(owner)
    make_run(owner, status=Run.Status.FINISHED)
    theirs = make_run(other)
    ids = [r["id"] for r in client_for(owner).get("/api/runs/").json()["results"]]
    assert theirs.pk not in ids and mine.pk in ids and len(ids) == 2
    queued = client_for(owner).get("/api/runs/?status=queued").json()
    assert [r["id"] for r in queued["results"]] == [mine.pk]
    assert client_for(owner).get("/api/runs/?status=bogus").status_code == 400
    everyone = client_for(staff).get("/api/runs/").json()
    assert everyone["count"] == 3
    only_other = client_for(staff).get("/api/runs/?owner=other").json()
    assert [r["id"] for r in only_other["results"]] == [theirs.pk]


def test_cancel_resume_clone(owner: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(owner)
    run = make_run(owner)
    assert post(client, f"/api/runs/{run.pk}/cancel/", {}).json()["status"] == "cancelled"
    again = post(client, f"/api/runs/{run.pk}/cancel/", {})
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert post(client, f"/api/runs/{run.pk}/resume/", {}).json()["status"] == "queued"
    assert len(callbacks) == 1
    assert post(client, f"/api/runs/{run.pk}/resume/", {}).status_code == 409

    running = make_run(owner, status=Run.Status.RUNNING)
    assert post(client, f"/api/runs/{running.pk}/cancel/", {}).json()["status"] == "cancelling"

    with django_capture_on_commit_callbacks(execute=False):
        clone = post(client, f"/api/runs/{run.pk}/clone/", {"overrides": {"seed": 7}})
    assert clone.status_code == 201
    assert clone.json()["cloned_from"] == run.pk
    assert clone.json()["recipe"]["run"]["seed"] == 7
    bad = post(
        client, f"/api/runs/{run.pk}/clone/", {"overrides": {"diffusion_microgroup_size": 3}}
    )
    assert bad.status_code == 400 and "layout.diffusion_microgroup_size" in bad.json()


def _event(run: Run, seq: int, kind: str, step: int | None, superseded: bool = False) -> None:
    Event.objects.create(
        run=run,
        seq=seq,
        type=kind,
        step=step,
        payload={"type": kind, "step": step},
        time=timezone.now(),
        superseded=superseded,
    )


def test_events_after_a_sequence_number(owner: Any) -> None:
    run = make_run(owner)
    for seq, kind in enumerate(["run_started", "rollout_finished", "train_step_finished"], 1):
        _event(run, seq, kind, None if kind == "run_started" else 0)
    _event(run, 4, "rollout_finished", 1, superseded=True)
    client = client_for(owner)
    after = client.get(f"/api/runs/{run.pk}/events/?after=1").json()
    assert [e["seq"] for e in after["results"]] == [2, 3]
    assert after["more"] is False
    everything = client.get(f"/api/runs/{run.pk}/events/?superseded=1").json()
    assert [e["seq"] for e in everything["results"]] == [1, 2, 3, 4]
    assert client.get(f"/api/runs/{run.pk}/events/?after=x").status_code == 400


def _sample(
    run: Run,
    step: int,
    group: int,
    index: int,
    reward: float,
    prompt: str,
    superseded: bool = False,
) -> None:
    name = f"x{step}{group}{index}" + ("-old" if superseded else "")
    Sample.objects.create(
        run=run,
        step=step,
        rollout_index=step,
        group_index=group,
        prompt=prompt,
        index_in_group=index,
        image=f"runs/{run.pk}/{name}.png",
        thumbnail=f"runs/{run.pk}/{name}.thumb.png",
        reward=reward,
        components={"color": reward},
        advantage=0.0,
        seed=100 + index,
        superseded=superseded,
    )


def test_samples_filters_and_metrics(owner: Any) -> None:
    run = make_run(owner)
    # Step 0: rewards 0.2, 0.4 (red) and 0.6, 0.8 (blue): mean 0.5, population std sqrt(0.05).
    for group, (prompt, rewards) in enumerate(
        [("a red image", (0.2, 0.4)), ("a blue image", (0.6, 0.8))]
    ):
        for index, reward in enumerate(rewards):
            _sample(run, 0, group, index, reward, prompt)
    _sample(run, 1, 0, 0, 1.0, "a red image")
    client = client_for(owner)
    step0 = client.get(f"/api/runs/{run.pk}/samples/?step=0").json()
    assert step0["count"] == 4
    assert step0["results"][0]["image_url"] == f"/media/runs/{run.pk}/x000.png"
    group1 = client.get(f"/api/runs/{run.pk}/samples/?step=0&group=1").json()
    assert [s["reward"] for s in group1["results"]] == [0.6, 0.8]
    red = client.get(f"/api/runs/{run.pk}/samples/?prompt=RED").json()
    assert red["count"] == 3


def test_samples_a_resume_superseded_are_listed_when_asked(owner: Any) -> None:
    run = make_run(owner)
    # Step 1's sample was stored, then superseded by a resume that stored it again.
    _sample(run, 0, 0, 0, 0.1, "a red image")
    _sample(run, 1, 0, 0, 0.2, "a red image", superseded=True)
    _sample(run, 1, 0, 0, 0.3, "a red image")
    client = client_for(owner)
    shown = client.get(f"/api/runs/{run.pk}/samples/").json()
    assert [(s["step"], s["reward"], s["superseded"]) for s in shown["results"]] == [
        (0, 0.1, False),
        (1, 0.3, False),
    ]
    everything = client.get(f"/api/runs/{run.pk}/samples/?superseded=1&step=1").json()
    assert [(s["reward"], s["superseded"], s["image_url"]) for s in everything["results"]] == [
        (0.2, True, f"/media/runs/{run.pk}/x100-old.png"),
        (0.3, False, f"/media/runs/{run.pk}/x100.png"),
    ]


def test_metrics_from_stored_rollouts(owner: Any, settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path
    run = make_run(owner)
    # Step 0: rewards 0.2, 0.4 | 0.6, 0.8: mean 0.5, population std sqrt(0.05); step 1: one 1.0.
    first_rollout, second_rollout = (
        rollout(0, 0, ((0.2, 0.4), (0.6, 0.8))),
        rollout(1, 1, ((1.0,),)),
    )
    store(run.pk, first_rollout, train(1, loss=0.3), second_rollout)
    metrics = client_for(owner).get(f"/api/runs/{run.pk}/metrics/").json()
    first, second = metrics["reward"]
    assert first["step"] == 0 and first["count"] == 4
    assert first["mean"] == pytest.approx(0.5)
    assert first["std"] == pytest.approx(0.05**0.5)
    assert first["components"] == {"color": pytest.approx(0.5)}
    assert second == {
        "step": 1, "time": second_rollout.time, "mean": 1.0, "std": 0.0, "count": 1,
        "components": {"color": 1.0},
    }  # fmt: skip
    assert [(t["step"], t["loss"]) for t in metrics["train"]] == [(1, 0.3)]
    assert metrics["steps"] == [0, 1] and metrics["downsampled"] is False


def test_schema_and_docs(owner: Any, client: Client) -> None:
    schema = client_for(owner).get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/runs/{id}/events/" in schema.content
    assert b"bearer" in schema.content
    assert client.get("/api/docs/").status_code == 302
    assert client_for(owner).get("/api/docs/").status_code == 200
