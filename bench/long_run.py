"""A long run's pages: server time and bytes of what opens a run of thousands of rollouts.

Builds a scratch SQLite database (migrated like `make run` does), stores a synthetic run with
`manage.py synthesize_run`'s code (default 5,000 rollouts of 16 prompts x 8 samples: real event
payloads, chart points and sample rows), then times through Django's test client (server time,
no network): what the run page fetches before its first paint (the page, its state and its
downsampled series; the static files' bytes are added from disk), the gallery's first page, an
events page of 500, a zoom on 200 steps, and for comparison the old way's cost of replaying every
event page from 0. Prints a table and appends it to docs/performance.md with the machine.

    .venv/bin/python bench/long_run.py [--rollouts 5000 --prompts 16 --samples 8 --repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from report import REPO, heading, publish, scratch_django

#: What the run page loads before its first paint besides its data (templates/runs/detail.html).
STATIC = ["app.css", "charts.js", "run.js"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=5000)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    scratch_django("gw-long-run-")
    from django.contrib.auth.models import User
    from django.test import Client

    from engine.presets import PRESETS
    from webapp.runs.models import Event, Run, Sample
    from webapp.runs.synthetic import synthesize

    user = User.objects.create_user("bench")
    run = Run.objects.create(
        owner=user, name="long", recipe=PRESETS["tiny-color"].recipe.to_dict(), status="running"
    )
    started = time.perf_counter()
    last_seq = synthesize(run, args.rollouts, args.prompts, args.samples)
    stored = time.perf_counter() - started
    events, samples = Event.objects.filter(run=run).count(), Sample.objects.filter(run=run).count()

    client = Client()
    client.force_login(user)
    api = f"/api/runs/{run.pk}"
    first_paint = {
        "run page HTML": f"/runs/{run.pk}/",
        "state": f"{api}/state/",
        "series (500 points each)": f"{api}/metrics/?points=500",
    }
    others = {
        "gallery first page": f"/runs/{run.pk}/gallery/",
        "events page of 500 (middle)": f"{api}/events/?after={last_seq // 2}",
        "zoom: 200 steps at full resolution": (
            f"{api}/metrics/?points=500&from={args.rollouts // 2}&to={args.rollouts // 2 + 199}"
        ),
        "full series (every point)": f"{api}/metrics/",
    }

    def measure(url: str) -> tuple[float, int]:
        times, size = [], 0
        for _ in range(args.repeats):
            began = time.perf_counter()
            response = client.get(url)
            body = b"".join(response) if response.streaming else response.content
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (url, response.status_code)
            size = len(body)
        return statistics.median(times), size

    lines = []
    total_ms, total_bytes = 0.0, 0
    for name, url in first_paint.items():
        ms, size = measure(url)
        total_ms, total_bytes = total_ms + ms, total_bytes + size
        lines.append(f"| {name} | {ms:.0f} | {size / 1024:.0f} |")
    static_bytes = sum((REPO / "static" / "groupwise" / name).stat().st_size for name in STATIC)
    total_bytes += static_bytes
    lines.append(f"| static files ({', '.join(STATIC)}) | — | {static_bytes / 1024:.0f} |")
    lines.append(
        f"| **before the first paint** | **{total_ms:.0f}** | **{total_bytes / 1024:.0f}** |"
    )
    for name, url in others.items():
        ms, size = measure(url)
        lines.append(f"| {name} | {ms:.0f} | {size / 1024:.0f} |")

    # What opening the page used to cost: every event page from 0, replayed in the browser.
    began, after, replay_bytes = time.perf_counter(), 0, 0
    while True:
        answer = client.get(f"{api}/events/?after={after}")
        replay_bytes += len(answer.content)
        page = answer.json()
        if not page["more"]:
            break
        after = page["results"][-1]["seq"]
    replay_ms = (time.perf_counter() - began) * 1000
    lines.append(
        f"| old way: every event from 0 (once) | {replay_ms:.0f} | {replay_bytes / 1024:.0f} |"
    )
    table = "\n".join(
        [
            heading(f"A long run's pages ({args.rollouts:,} rollouts)", "SQLite"),
            "",
            f"`bench/long_run.py`: {args.rollouts} rollouts x {args.prompts} prompts x "
            f"{args.samples} samples: {events:,} events, {samples:,} sample rows (stored in "
            f"{stored:.0f} s). Server time through Django's test client, median of "
            f"{args.repeats}; KiB of the response body.",
            "",
            "| request | median ms | KiB |",
            "|---|---|---|",
            *lines,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
