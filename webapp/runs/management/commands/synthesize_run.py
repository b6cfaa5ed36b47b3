"""``manage.py synthesize_run``: a long synthetic run, to try and measure the dashboard at a real
run's size without training (``webapp.runs.synthetic``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.presets import PRESETS
from webapp.runs.management.owners import owner_named
from webapp.runs.models import Run
from webapp.runs.synthetic import synthesize


class Command(BaseCommand):
    help = (
        "Store a synthetic run (events, chart points, sample rows; a shared set of images) of "
        "ROLLOUTS rollouts, or append them to run --append-to. Prints the run's id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rollouts", type=int, default=5000, help="rollouts to store")
        parser.add_argument("--prompts", type=int, default=16, help="prompt groups per rollout")
        parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
        parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
        parser.add_argument("--owner", help="the run's owner (default: the only superuser)")
        parser.add_argument("--name", default="synthetic", help="the new run's name")
        parser.add_argument("--append-to", type=int, help="a synthetic run to add rollouts to")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("rollouts", "prompts", "samples"):
            if options[name] < 1:
                raise CommandError(f"--{name}={options[name]}: use 1 or more")
        if options["append_to"] is not None:
            run = Run.objects.filter(pk=options["append_to"]).first()
            if run is None:
                raise CommandError(f"--append-to={options['append_to']}: no such run")
        else:
            recipe = PRESETS["tiny-color"].recipe
            run = Run.objects.create(
                owner=owner_named(options["owner"]),
                name=options["name"],
                preset="tiny-color",
                recipe=recipe.to_dict(),
                status=Run.Status.RUNNING,
                max_steps=options["rollouts"] * 2,
            )
        last_seq = synthesize(
            run,
            options["rollouts"],
            options["prompts"],
            options["samples"],
            eval_every=options["eval_every"],
        )
        self.stdout.write(f"run {run.pk} last_seq {last_seq}")
