"""A page of 500 stored events: written from the stored JSON text vs decoded and re-encoded.

Builds a scratch SQLite database (migrated like `make run` does) holding one run's events the
sizes a real run stores (rollout_finished with P x G samples, train steps, health), then times,
in the same process and on the same rows, the page as the events API and the socket write it now
(``webapp.runs.event_pages``: the payload's text spliced in) against the page as they wrote it
before (the payloads decoded by the JSON field, then DRF's serializer and JSON renderer). Prints
a table and appends it to docs/performance.md with the machine.

    .venv/bin/python bench/event_pages.py [--rollouts 100 --prompts 16 --group 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

from report import heading, publish, scratch_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    scratch_django("gw-events-")
    from django.contrib.auth.models import User
    from django.utils import timezone
    from rest_framework.renderers import JSONRenderer

    from engine.presets import PRESETS
    from webapp.runs.event_pages import event_page
    from webapp.runs.models import Event, Run
    from webapp.runs.serializers import EventPageSerializer

    user = User.objects.create_user("bench")
    run = Run.objects.create(
        owner=user, name="bench", recipe=PRESETS["tiny-color"].recipe.to_dict()
    )
    now, rows, seq = timezone.now(), [], 0
    for r in range(args.rollouts):
        groups = [
            {
                "prompt": f"a photo of prompt {g}",
                "samples": [
                    {"seed": s, "image": f"/media/runs/1/{r}-{g}-{s}.png", "reward": 0.5 + s / 100,
                     "advantage": s / 10 - 0.8, "components": {"red": 0.25}}
                    for s in range(args.group)
                ],
            }
            for g in range(args.prompts)
        ]  # fmt: skip
        payloads = [("rollout_finished", {"step": r, "groups": groups})]
        payloads += [("train_step_finished", {"step": r, "loss": -1.5e-10, "kl": 0.0, "lr": 1e-4})]
        payloads += [("health", {"step": r, "checks": [{"name": "replay", "status": "pass"}] * 8})]
        for kind, payload in payloads:
            seq += 1
            rows.append(Event(run=run, seq=seq, type=kind, step=r, payload=payload, time=now))
    Event.objects.bulk_create(rows, batch_size=200)
    events = run.events.filter(superseded=False)
    limit = 500

    def spliced() -> bytes:
        page, more = event_page(events, limit, full=True)
        return f'{{"results": {page.json}, "more": {"true" if more else "false"}}}'.encode()

    def decoded() -> bytes:
        page = list(events.order_by("seq")[: limit + 1])
        data = EventPageSerializer({"results": page[:limit], "more": len(page) > limit}).data
        return bytes(JSONRenderer().render(data))

    timings: dict[str, list[float]] = {"spliced": [], "decoded": []}
    sizes = {"spliced": len(spliced()), "decoded": len(decoded())}
    for _ in range(args.repeats):
        for name, build in (("spliced", spliced), ("decoded", decoded)):
            started = time.perf_counter()
            build()
            timings[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    lines = [
        heading(
            "Event page of 500 (events API / socket backlog)",
            f"{seq} events stored, rollouts of {args.prompts} x {args.group}, SQLite",
        ),
        "",
        "| page written | median ms | bytes |",
        "|---|---:|---:|",
        f"| from the stored text (now) | {medians['spliced'] * 1000:.1f} | {sizes['spliced']:,} |",
        f"| decoded and re-encoded (before) | {medians['decoded'] * 1000:.1f} | "
        f"{sizes['decoded']:,} |",
        "",
        f"Ratio (before / now), same rows, one run, median of {args.repeats}: "
        f"{medians['decoded'] / medians['spliced']:.1f}x.",
        "",
    ]
    publish("\n".join(lines))


if __name__ == "__main__":
    main()
