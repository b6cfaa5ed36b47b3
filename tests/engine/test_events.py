"""Every event type round-trips through plain data and strict JSON."""

import json
import math

import numpy as np
import pytest

from engine.events import (
    EVENT_TYPES,
    CheckpointSaved,
    EvalSample,
    EvaluationFinished,
    Event,
    Health,
    HealthCheck,
    LogLine,
    PromptGroup,
    RolloutFinished,
    RunEnded,
    RunStarted,
    Sample,
    Throughput,
    TrainStepFinished,
    decode_image,
    encode_image,
)
from engine.layout import layout
from engine.recipe import Recipe


def image(seed, height=4, width=6):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def one_of_each():
    recipe = Recipe()
    samples = tuple(
        Sample(
            sample_index=i,
            seed=42 + i,
            image=image(i),
            reward=0.25 * i,
            reward_components={"color": 0.25 * i, "color.mean_red": 0.5},
            advantage=i - 1.5,
        )
        for i in range(4)
    )
    return [
        RunStarted(time=1.0, recipe=recipe.to_dict(), layout=layout(recipe).to_dict()),
        RolloutFinished(
            time=2.0,
            step=0,
            rollout_index=0,
            rollout_seed=42,
            sde_window=(0, 1),
            groups=(PromptGroup(group_index=0, prompt="a red image", samples=samples),),
        ),
        TrainStepFinished(
            time=3.0,
            step=1,
            rollout_index=0,
            loss=0.1,
            policy_loss=0.09,
            kl=0.01,
            clip_fraction=0.2,
            ratio_mean=1.0,
            ratio_min=0.9999,
            ratio_max=1.0001,
            grad_norm=0.5,
            lr=1e-3,
        ),
        EvaluationFinished(
            time=4.0,
            step=5,
            reward_mean=0.8,
            reward_components={"color": 0.8},
            samples=(
                EvalSample(
                    prompt="a blue image",
                    seed=7,
                    image=image(9, 8, 8),
                    reward=0.8,
                    reward_components={"color": 0.8},
                ),
            ),
        ),
        Throughput(
            time=5.0,
            step=5,
            images_per_second=12.5,
            rollout_seconds=1.0,
            reward_seconds=0.1,
            train_seconds=2.0,
            weight_sync_seconds=0.0,
        ),
        Health(
            time=6.0,
            step=5,
            checks=(
                HealthCheck(name="replay_tolerance", status="pass", message="ok", value=1e-6),
                HealthCheck(name="reward_spread", status="warn", message="all rewards equal"),
            ),
        ),
        CheckpointSaved(time=7.0, step=10, path="runs/1/checkpoints/10"),
        LogLine(time=8.0, level="info", message="rollout 0 took 1.0 s"),
        RunEnded(time=9.0, status="failed", step=10, error="CUDA out of memory"),
    ]


def test_there_is_one_event_class_per_kind_in_the_design():
    assert sorted(EVENT_TYPES) == sorted(
        [
            "run_started",
            "rollout_finished",
            "train_step_finished",
            "evaluation_finished",
            "throughput",
            "health",
            "checkpoint_saved",
            "log_line",
            "run_ended",
        ]
    )
    assert sorted(type(e).type for e in one_of_each()) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_round_trip_through_dict_and_json(event):
    data = event.to_dict()
    assert data["type"] == event.type
    assert data["schema_version"] == 1
    assert Event.from_dict(data) == event
    line = event.to_json()
    assert "\n" not in line
    again = Event.from_json(line)
    assert type(again) is type(event)
    assert again == event
    assert again.to_dict() == data


def test_images_survive_exactly():
    event = one_of_each()[1]
    again = Event.from_json(event.to_json())
    for before, after in zip(event.groups[0].samples, again.groups[0].samples, strict=True):
        assert after.image.dtype == np.uint8
        assert np.array_equal(before.image, after.image)
    assert encode_image(image(1))["shape"] == [4, 6, 3]
    assert np.array_equal(decode_image(encode_image(image(1))), image(1))


def test_a_sink_can_store_images_its_own_way():
    event = one_of_each()[1]
    stored = {}

    def to_file(array):
        name = f"img-{len(stored)}.png"
        stored[name] = array
        return name

    data = event.to_dict(encode_image=to_file)
    assert data["groups"][0]["samples"][2]["image"] == "img-2.png"
    again = Event.from_dict(data, decode_image=stored.__getitem__)
    assert again == event


def test_non_finite_numbers_stay_strict_json():
    event = TrainStepFinished(
        step=1,
        rollout_index=0,
        loss=math.nan,
        policy_loss=math.inf,
        kl=-math.inf,
        clip_fraction=0.0,
        ratio_mean=1.0,
        ratio_min=1.0,
        ratio_max=1.0,
        grad_norm=math.nan,
        lr=1e-3,
    )
    line = event.to_json()

    def refuse(constant):
        raise AssertionError(f"{constant} is not strict JSON")

    data = json.loads(line, parse_constant=refuse)
    assert (data["loss"], data["policy_loss"], data["kl"]) == ("NaN", "Infinity", "-Infinity")
    again = Event.from_json(line)
    assert math.isnan(again.loss) and again.policy_loss == math.inf and again.kl == -math.inf


def test_time_defaults_to_now():
    before = LogLine(level="info", message="x").time
    assert before > 1.7e9


def test_unknown_type_and_newer_schema_are_refused():
    with pytest.raises(ValueError, match="unknown event type 'party'"):
        Event.from_dict({"type": "party", "schema_version": 1})
    data = one_of_each()[-1].to_dict()
    with pytest.raises(ValueError, match="run_ended event has schema_version 2; this code reads 1"):
        Event.from_dict({**data, "schema_version": 2})
    with pytest.raises(ValueError, match=r"RunEnded has no fields \['reason'\]"):
        Event.from_dict({**data, "reason": "x"})


def test_events_check_their_values():
    with pytest.raises(ValueError, match="status='done' is not one of"):
        RunEnded(status="done", step=1)
    with pytest.raises(ValueError, match="image must be a uint8 array"):
        EvalSample(
            prompt="x",
            seed=1,
            image=np.zeros((4, 4, 3), dtype=np.float32),
            reward=0.0,
            reward_components={},
        )
    with pytest.raises(ValueError, match="image must be a uint8 array"):
        EvalSample(
            prompt="x", seed=1, image=np.zeros((4, 4), np.uint8), reward=0.0, reward_components={}
        )


def test_events_are_frozen():
    event = LogLine(level="info", message="x")
    with pytest.raises(AttributeError):
        event.message = "y"
