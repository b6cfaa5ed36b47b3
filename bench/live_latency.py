"""Live latency: from an event being stored to its arrival at 1 and 50 browser sockets.

Starts the ASGI server (`manage.py serve --no-worker`) on a scratch SQLite database, once on the
embedded default (the server's event-table follower notices new events) and once with Redis as
the channel layer (the sink pushes a group message), opens N logged-in sockets on one run, then
stores EVENTS log-line events one at a time through the web sink, each stamped with the time it
was handed to the sink, and records when every socket receives it. Prints p50/p95 per setup and
appends the table to docs/performance.md with the machine.

    .venv/bin/python bench/live_latency.py [--events 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.net.ports import free_port  # noqa: E402

REDIS = "redis://127.0.0.1:6379/11"


def measure(var_dir: Path, redis_url: str | None, clients: int, count: int) -> list[float]:
    """Start a server in this configuration and return every socket's latencies in ms."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(GROUPWISE_VAR_DIR=str(var_dir), REDIS_URL=redis_url or "")
    port = free_port()
    log = (var_dir / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-worker", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while b"running at" not in (var_dir / "serve.log").read_bytes():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError((var_dir / "serve.log").read_text())
            time.sleep(0.2)
        return asyncio.run(_sockets(port, clients, count))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        log.close()


async def _sockets(port: int, clients: int, count: int) -> list[float]:
    from asgiref.sync import sync_to_async
    from websockets.asyncio.client import connect

    run_id, cookie = await sync_to_async(_run_and_session)()
    received: list[float] = []
    connections = []
    for _ in range(clients):
        ws = await connect(
            f"ws://127.0.0.1:{port}/ws/runs/{run_id}/",
            additional_headers={
                "Cookie": f"sessionid={cookie}",
                "Origin": f"http://127.0.0.1:{port}",
            },
        )
        await ws.send(json.dumps({"type": "subscribe", "after": 0}))
        await ws.recv()
        connections.append(ws)

    async def listen(ws: object, expected: int) -> None:
        seen = 0
        while seen < expected:
            message = json.loads(await ws.recv())  # type: ignore[attr-defined]
            now = time.time()
            for event in message.get("events", []):
                received.append((now - event["payload"]["time"]) * 1000)
                seen += 1

    listeners = [asyncio.create_task(listen(ws, count)) for ws in connections]
    sink = await sync_to_async(_sink)(run_id)
    from engine.events import LogLine

    for index in range(count):
        await sync_to_async(sink)(LogLine(level="info", message=f"ping {index}"))
        await asyncio.sleep(0.25)
    await sync_to_async(sink.close)()
    await asyncio.wait_for(asyncio.gather(*listeners), timeout=60)
    for ws in connections:
        await ws.close()
    return received


def _run_and_session() -> tuple[int, str]:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from engine.presets import PRESETS
    from webapp.runs.models import Run

    user = User.objects.create_user(f"bench-{time.time_ns()}")
    run = Run.objects.create(
        owner=user, name="latency", recipe=PRESETS["tiny-color"].recipe.to_dict()
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return run.pk, str(session.session_key)


def _sink(run_id: int):  # type: ignore[no-untyped-def]
    from webapp.runs.models import Run
    from webapp.runs.sink import RunSink

    return RunSink(Run.objects.get(pk=run_id))


def child(clients: int, count: int) -> None:
    """One setup, configured by this process's environment: print the latencies as JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    var_dir = Path(os.environ["GROUPWISE_VAR_DIR"])
    print(json.dumps(measure(var_dir, os.environ.get("REDIS_URL") or None, clients, count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--child", type=int, metavar="CLIENTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.events)
        return
    rows = []
    for name, redis_url in (
        ("embedded (event-table follower)", ""),
        ("Redis channel layer", REDIS),
    ):
        for clients in (1, 50):
            with tempfile.TemporaryDirectory() as scratch:
                # Each setup runs in its own process: Django reads its settings once.
                env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
                env.update(GROUPWISE_VAR_DIR=scratch, REDIS_URL=redis_url)
                command = [sys.executable, __file__, "--child", str(clients)]
                output = subprocess.run(
                    [*command, "--events", str(args.events)],
                    env=env, capture_output=True, text=True, check=True, timeout=600,
                )  # fmt: skip
                latencies = json.loads(output.stdout.strip().splitlines()[-1])
            p50 = statistics.median(latencies)
            p95 = statistics.quantiles(latencies, n=20)[-1]
            rows.append(f"| {name} | {clients} | {len(latencies)} | {p50:.0f} | {p95:.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            heading("Live latency"),
            "",
            f"`bench/live_latency.py`: {args.events} events stored one every 0.25 s; time from the "
            "sink receiving an event to each socket receiving it.",
            "",
            "| setup | sockets | deliveries | p50 ms | p95 ms |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
