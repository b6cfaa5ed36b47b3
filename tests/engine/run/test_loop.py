"""The training loop on the tiny model: resume equivalence, cancellation, evaluation, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine import events
from engine.models.base import FlowModel
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.run.loop import run
from engine.trainer import Trainer
from tests.engine.recording import Recorder, weights
from tests.recipes import TINY_COLOR_SMALL


def recipe(**changes: Any):
    small = {**TINY_COLOR_SMALL, "max_steps": 4, "checkpoint_every": 2, "eval_every": 2}
    return apply_overrides(PRESETS["tiny-color"].recipe, {**small, **changes})


def test_two_plus_resume_plus_two_equals_four_straight(tmp_path: Path) -> None:
    straight = Recorder()
    assert run(recipe(), straight, out_dir=tmp_path / "straight").status == "finished"

    first = Recorder()

    def stop_after_checkpoint() -> str | None:
        saved = first.of(events.CheckpointSaved)
        return "interrupted" if saved and saved[-1].step == 2 else None

    ended = run(recipe(), first, stop_after_checkpoint, out_dir=tmp_path / "resumed")
    assert (ended.status, ended.step) == ("interrupted", 2)
    second = Recorder()
    assert run(recipe(), second, out_dir=tmp_path / "resumed").status == "finished"
    assert second.of(events.RunStarted)[0].start_step == 2

    for name, value in weights(tmp_path / "straight", 4).items():
        torch.testing.assert_close(weights(tmp_path / "resumed", 4)[name], value, rtol=0, atol=1e-6)
    rewards = {
        "straight": [
            [s.reward for g in e.groups for s in g.samples]
            for e in straight.of(events.RolloutFinished)
        ],
        "resumed": [
            [s.reward for g in e.groups for s in g.samples]
            for e in second.of(events.RolloutFinished)
        ],
    }
    assert rewards["resumed"] == rewards["straight"][2:]


def test_cancel_takes_effect_within_one_phase(tmp_path: Path) -> None:
    seen = Recorder()
    ended = run(
        recipe(),
        seen,
        lambda: "cancelled" if seen.of(events.RolloutFinished) else None,
        out_dir=tmp_path,
    )
    assert (ended.status, ended.step) == ("cancelled", 0)
    assert len(seen.of(events.RolloutFinished)) == 1
    assert seen.of(events.TrainStepFinished) == [], "no update after the cancel"
    assert seen.events[-1] == ended


def test_evaluation_uses_fixed_seeds_and_the_held_out_prompts(tmp_path: Path) -> None:
    seen = Recorder()
    run(recipe(eval_prompts=["a red image", "a white image"]), seen, out_dir=tmp_path)
    first, second = seen.of(events.EvaluationFinished)
    assert (first.step, second.step) == (2, 4)
    assert [s.seed for s in first.samples] == [s.seed for s in second.samples]
    assert [s.prompt for s in first.samples] == ["a red image"] * 2 + ["a white image"] * 2
    rollout_seeds = {
        s.seed for e in seen.of(events.RolloutFinished) for g in e.groups for s in g.samples
    }
    assert not rollout_seeds & {s.seed for s in first.samples}


def test_every_rollout_reports_health_and_throughput(tmp_path: Path) -> None:
    seen = Recorder()
    run(recipe(max_steps=2), seen, out_dir=tmp_path)
    (health, _second) = seen.of(events.Health)
    replay = next(c for c in health.checks if c.name == "replay")
    assert replay.status == "pass" and replay.value is not None and replay.value < 1e-5
    checks = {c.name: c.status for c in health.checks}
    assert set(checks) == {
        "log_probs_finite",
        "log_probs_shape",
        "distinct_seeds",
        "distinct_samples",
        "replay",
        "zero_std_groups",
        "group_reward_std",
        "phase_shares",
    }
    for name in ("log_probs_finite", "log_probs_shape", "distinct_seeds", "distinct_samples"):
        assert checks[name] == "pass", health
    for throughput in seen.of(events.Throughput):
        assert throughput.images_per_second > 0 and throughput.rollout_seconds > 0


def test_an_invalid_recipe_fails_before_any_compute(tmp_path: Path) -> None:
    seen = Recorder()
    ended = run(recipe(diffusion_microgroup_size=3), seen, out_dir=tmp_path)
    assert ended.status == "failed"
    assert "diffusion_microgroup_size" in (ended.error or "")
    assert seen.of(events.RunStarted) == []


def test_a_corrupt_checkpoint_is_a_clear_failure(tmp_path: Path) -> None:
    run(recipe(max_steps=2), Recorder(), out_dir=tmp_path)
    weights_file = tmp_path / "checkpoints" / "step-000002" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-8] + b"garbage!")
    ended = run(recipe(), Recorder(), out_dir=tmp_path)
    assert ended.status == "failed"
    assert "corrupt: model.safetensors" in (ended.error or "")


def test_eval_every_0_never_evaluates_not_even_at_the_end(tmp_path: Path) -> None:
    seen = Recorder()
    ended = run(recipe(max_steps=2, eval_every=0), seen, out_dir=tmp_path)
    assert ended.status == "finished", ended.error
    assert seen.of(events.EvaluationFinished) == []
    # The same run evaluating every 4 steps still evaluates once, at its last step.
    seen = Recorder()
    run(recipe(max_steps=2, eval_every=4), seen, out_dir=tmp_path / "b")
    assert [e.step for e in seen.of(events.EvaluationFinished)] == [2]


def test_text_encoders_leave_between_encoding_and_training(tmp_path: Path, monkeypatch) -> None:
    order: list[str] = []
    encode, offload = FlowModel.encode_prompts, FlowModel.offload_text_encoders
    train_rollout = Trainer.train_rollout

    def spy(name: str, method):
        def call(*args, **kwargs):
            order.append(name)
            return method(*args, **kwargs)

        return call

    monkeypatch.setattr(FlowModel, "encode_prompts", spy("encode", encode))
    monkeypatch.setattr(FlowModel, "offload_text_encoders", spy("offload", offload))
    monkeypatch.setattr(Trainer, "train_rollout", spy("train", train_rollout))
    changes = {"max_steps": 2, "eval_every": 0, "checkpoint_every": 0}
    ended = run(recipe(**changes, offload_text_encoders="cpu"), Recorder(), out_dir=tmp_path / "a")
    assert ended.status == "finished"
    # Per rollout: 2 requests encode their prompt, the trainer encodes each prompt once more,
    # then the encoders leave, then the update (eval_every 0: no evaluation brings them back).
    assert order == (["encode"] * 4 + ["offload", "train"]) * 2
    order.clear()
    # The tiny model's default ("none"): they stay.
    assert run(recipe(**changes), Recorder(), out_dir=tmp_path / "b").status == "finished"
    assert order == (["encode"] * 4 + ["train"]) * 2


def test_a_bfloat16_run_checkpoints_float32_master_weights(tmp_path: Path) -> None:
    changes = {"max_steps": 1, "eval_every": 1, "checkpoint_every": 1}
    seen = Recorder()
    ended = run(recipe(**changes, **{"model.dtype": "bfloat16"}), seen, out_dir=tmp_path)
    assert ended.status == "finished", ended.error
    saved = weights(tmp_path, 1)
    assert saved and {value.dtype for value in saved.values()} == {torch.float32}
    # The health check's replay: the trainer recomputed the rollout's bf16 log-probs within
    # 1e-5 (REPLAY_PASS) of a ratio of 1.
    (health,) = seen.of(events.Health)
    (replay,) = [check for check in health.checks if check.name == "replay"]
    assert replay.status == "pass" and replay.value is not None and replay.value <= 1e-5
