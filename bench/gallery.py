"""Gallery first page with 50,000 stored samples: how long the server takes to render it.

Builds a scratch SQLite database (migrated like `make run` does), stores one run with
ROLLOUTS x PROMPTS x GROUP samples, then times the first gallery page (latest step, every
prompt), a step in the middle and a prompt's evolution strip through Django's test client.
Prints a table and appends it to docs/performance.md with the machine.

    .venv/bin/python bench/gallery.py [--rollouts 200 --prompts 16 --group 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

from report import heading, publish, scratch_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    scratch_django("gw-gallery-")
    from django.contrib.auth.models import User
    from django.test import Client

    from engine.presets import PRESETS
    from webapp.runs.models import Run, Sample

    user = User.objects.create_user("bench")
    run = Run.objects.create(
        owner=user, name="bench", recipe=PRESETS["tiny-color"].recipe.to_dict()
    )
    rows = [
        Sample(
            run=run,
            step=r,
            rollout_index=r,
            group_index=g,
            prompt=f"prompt {g}",
            index_in_group=i,
            image=f"runs/{run.pk}/{r}/{g}-{i}.png",
            thumbnail=f"runs/{run.pk}/{r}/{g}-{i}.t.png",
            reward=(r + i) / 1000,
            components={"color": (r + i) / 1000},
            advantage=0.0,
            seed=r * 1000 + g * 16 + i,
        )
        for r in range(args.rollouts)
        for g in range(args.prompts)
        for i in range(args.group)
    ]
    Sample.objects.bulk_create(rows, batch_size=5000)
    client = Client()
    client.force_login(user)
    pages = {
        "first page (latest step)": f"/runs/{run.pk}/gallery/",
        "middle step, best first": f"/runs/{run.pk}/gallery/?step={args.rollouts // 2}&order=best",
        "one prompt's evolution": f"/runs/{run.pk}/gallery/?prompt=prompt 3&view=evolution",
    }
    lines = []
    for name, url in pages.items():
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
        lines.append(f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} |")
    table = "\n".join(
        [
            heading(f"Gallery with {len(rows):,} samples", "SQLite"),
            "",
            f"`bench/gallery.py`: {args.rollouts} rollouts x {args.prompts} prompts x "
            f"{args.group} samples; server time per page over {args.repeats} requests.",
            "",
            "| page | median ms | max ms |",
            "|---|---|---|",
            *lines,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
