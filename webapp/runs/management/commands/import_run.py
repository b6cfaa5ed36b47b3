"""``manage.py import_run DIR``: a headless run's events, images and checkpoints into the
dashboard (``webapp.runs.importing``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.run.folder import RunFolderError
from webapp.runs.importing import import_run
from webapp.runs.management.owners import owner_named


class Command(BaseCommand):
    help = (
        "Import a run trained headless with `python -m engine train --out DIR`: its events "
        "(with their sequence numbers), sample images, checkpoints and recipe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="the run's --out folder")
        parser.add_argument(
            "--owner", help="the user who will own the run (default: the only superuser)"
        )
        parser.add_argument("--name", default="", help="the run's name (default: DIR's name)")
        parser.add_argument(
            "--reference-checkpoints",
            action="store_true",
            help="leave checkpoints in DIR instead of copying them into GROUPWISE_RUNS_DIR "
            "(the run then cannot resume in the dashboard)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = owner_named(options["owner"])
        try:
            run = import_run(
                options["dir"],
                owner,
                name=options["name"],
                copy_checkpoints=not options["reference_checkpoints"],
            )
        except RunFolderError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {options['dir']} as run #{run.pk} ({run.name}, {run.status}, step "
                f"{run.step}): {run.events.count()} events, {run.samples.count()} samples, "
                f"{run.checkpoints.count()} checkpoints."
            )
        )
