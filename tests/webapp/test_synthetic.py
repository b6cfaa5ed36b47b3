"""``manage.py synthesize_run``: rows as the sink writes them, appending where the run ends."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from webapp.runs.metrics import run_metrics
from webapp.runs.models import ChartPoint, Event, Run, Sample

pytestmark = pytest.mark.django_db


def test_a_synthetic_run_charts_what_its_samples_hold(
    django_user_model: Any, settings: Any, tmp_path: Any, capsys: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    django_user_model.objects.create_superuser("admin")
    call_command(
        "synthesize_run", "--rollouts", "3", "--prompts", "2", "--samples", "3", "--eval-every", "2"
    )
    run = Run.objects.get()
    assert (
        f"run {run.pk} last_seq {Event.objects.filter(run=run).count()}" in capsys.readouterr().out
    )
    # Per step: a rollout, a train step, throughput and health; an evaluation after step 1.
    assert Event.objects.filter(run=run).count() == 3 * 4 + 1
    assert ChartPoint.objects.filter(run=run).count() == 3 * 3 + 1
    for point in run_metrics(run)["reward"]:
        rewards = list(
            Sample.objects.filter(run=run, step=point["step"]).values_list("reward", flat=True)
        )
        assert point["count"] == len(rewards) == 6
        assert point["mean"] == pytest.approx(sum(rewards) / 6)
    sample = Sample.objects.filter(run=run).first()
    assert sample is not None and (tmp_path / sample.image).is_file()

    call_command(
        "synthesize_run",
        "--append-to",
        str(run.pk),
        "--rollouts",
        "2",
        "--prompts",
        "2",
        "--samples",
        "3",
    )
    assert [p["step"] for p in run_metrics(run)["reward"]] == [0, 1, 2, 3, 4]
    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    run.refresh_from_db()
    assert run.step == 5


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(CommandError, match="--rollouts=0: use 1 or more"):
        call_command("synthesize_run", "--rollouts", "0")
    with pytest.raises(CommandError, match="--append-to=999: no such run"):
        call_command("synthesize_run", "--append-to", "999")
    with pytest.raises(CommandError, match="--owner nobody: no such user"):
        call_command("synthesize_run", "--owner", "nobody")
