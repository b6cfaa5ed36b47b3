"""Load on loopback: websocket viewers on a training run plus a steady rate of API requests.

Starts the dashboard and a worker (`manage.py serve`) on a scratch database, launches a long
tiny-color training run through the API, opens VIEWERS logged-in sockets on it and sends RATE
API requests per second (run list, run, events, samples, metrics in turn; open loop: a slow
answer does not slow the sender) for SECONDS. Counts errors (a non-2xx answer, a failed
request, a socket that closes or reports an error) and measures API latency and event delivery
(from the engine stamping an event to a socket receiving it). Prints the table and appends it,
with the machine, to docs/performance.md.

    .venv/bin/python bench/load.py --profile embedded [--seconds 60 --viewers 50 --rate 100]
    .venv/bin/python bench/load.py --profile production   # PostgreSQL + Redis on 127.0.0.1

The production profile creates a scratch PostgreSQL database (dropped afterwards) and uses
Redis databases 9 (broker) and 10 (channel layer), which it flushes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.net.ports import free_port  # noqa: E402

POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS_BROKER = "redis://127.0.0.1:6379/9"
REDIS_LAYER = "redis://127.0.0.1:6379/10"
#: Long enough to outlast any measurement; the run is cancelled at the end.
RUN_STEPS = 100_000


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)


def profile_env(profile: str, var_dir: Path, database: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        GROUPWISE_VAR_DIR=str(var_dir),
        CELERY_BROKER_URL="",
        CELERY_RESULT_BACKEND="",
        GROUPWISE_ADMIN_PASSWORD="",
        GROUPWISE_RUN_CREATE_LIMIT="off",
        LOG_LEVEL="WARNING",
    )
    if profile == "production":
        env.update(
            DATABASE_URL=f"{POSTGRES}/{database}",
            REDIS_URL=REDIS_LAYER,
            CELERY_BROKER_URL=REDIS_BROKER,
        )
    return env


def prepare_services(profile: str) -> str | None:
    """Fresh scratch database and empty Redis databases for the production profile."""
    if profile != "production":
        return None
    import psycopg
    import redis

    for url in (REDIS_BROKER, REDIS_LAYER):
        redis.Redis.from_url(url).flushdb()
    database = f"groupwise_load_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    return database


def drop_database(database: str | None) -> None:
    if database is None:
        return
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def credentials() -> tuple[str, str]:
    """A user's session key (for sockets) and API token (for requests)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from webapp.accounts.models import ApiToken

    user = User.objects.create_user(f"load-{time.time_ns()}")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return str(session.session_key), ApiToken.issue(user, "load")[1]


def request(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


async def measure(
    port: int, run_id: int, cookie: str, token: str, args: Any
) -> tuple[Tally, Tally, int]:
    """(API tally, socket tally, requests sent)."""
    from websockets.asyncio.client import connect

    base = f"http://127.0.0.1:{port}"
    api, sockets = Tally(), Tally()
    # Each path's latencies too: which view the percentiles come from.
    by_path: dict[str, list[float]] = {}
    stop = asyncio.Event()

    async def viewer() -> None:
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/ws/runs/{run_id}/",
                additional_headers={"Cookie": f"sessionid={cookie}", "Origin": base},
                open_timeout=60,
            ) as ws:
                await ws.send(json.dumps({"type": "subscribe", "after": 0}))
                backlog = True
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                    except TimeoutError:
                        continue
                    message = json.loads(raw)
                    if message.get("type") != "events":
                        sockets.error(f"socket message {message}")
                        continue
                    now = time.time()
                    if not backlog:
                        for event in message["events"]:
                            sockets.latencies_ms.append((now - event["payload"]["time"]) * 1000)
                    backlog = False
        except Exception as error:
            sockets.error(f"socket: {type(error).__name__}: {error}")

    paths = [
        "/api/runs/",
        f"/api/runs/{run_id}/",
        f"/api/runs/{run_id}/events/?after=0",
        f"/api/runs/{run_id}/samples/?page_size=20",
        f"/api/runs/{run_id}/metrics/",
    ]
    pool = ThreadPoolExecutor(max_workers=64)
    loop = asyncio.get_running_loop()

    async def one(path: str) -> None:
        started = time.perf_counter()
        try:
            status, _ = await loop.run_in_executor(pool, request, base, token, "GET", path)
        except Exception as error:
            api.error(f"{path}: {type(error).__name__}: {error}")
            return
        if 200 <= status < 300:
            elapsed = (time.perf_counter() - started) * 1000
            api.latencies_ms.append(elapsed)
            by_path.setdefault(path.replace(str(run_id), "{id}"), []).append(elapsed)
        else:
            api.error(f"{path}: HTTP {status}")

    viewers = [asyncio.create_task(viewer()) for _ in range(args.viewers)]
    requests: list[asyncio.Task[None]] = []
    interval = 1 / args.rate
    start = time.perf_counter()
    for index in range(int(args.seconds * args.rate)):
        # Open loop: each request leaves at its scheduled time whatever the earlier ones do.
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        requests.append(asyncio.create_task(one(paths[index % len(paths)])))
    await asyncio.gather(*requests)
    stop.set()
    await asyncio.gather(*viewers)
    pool.shutdown()
    for path, values in by_path.items():
        p50, p95 = percentiles(values)
        print(f"{path}: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({len(values)} answers)")
    return api, sockets, len(requests)


def percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    return statistics.median(values), statistics.quantiles(values, n=20)[-1]


def run_profile(args: Any) -> str:
    var_dir = Path(tempfile.mkdtemp(prefix="groupwise-load-"))
    database = prepare_services(args.profile)
    env = profile_env(args.profile, var_dir, database)
    os.environ.update(env)
    for name in ("DATABASE_URL", "REDIS_URL"):
        if name not in env:
            os.environ.pop(name, None)
    port = free_port()
    log_path = var_dir / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--migrate", "--port", str(port),
             *(["--web-workers", str(args.web_workers)] if args.web_workers else [])],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while b"running at" not in log_path.read_bytes():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.2)
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
        django.setup()
        cookie, token = credentials()
        base = f"http://127.0.0.1:{port}"
        status, run = request(
            base, token, "POST", "/api/runs/",
            {"preset": "tiny-color", "name": "load", "overrides": {"max_steps": RUN_STEPS}},
        )  # fmt: skip
        assert status == 201, (status, run)
        # Measure while the run trains: wait for its first rollout to be stored.
        deadline = time.monotonic() + 300
        while True:
            _, events = request(base, token, "GET", f"/api/runs/{run['id']}/events/?after=0")
            if any(e["type"] == "rollout_finished" for e in events["results"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the run did not start training:\n{log_path.read_text()}")
            time.sleep(0.5)
        api, sockets, sent = asyncio.run(measure(port, run["id"], cookie, token, args))
        request(base, token, "POST", f"/api/runs/{run['id']}/cancel/", {})
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        drop_database(database)
    # Kept when anything failed: serve.log there says why.
    shutil.rmtree(var_dir, ignore_errors=True)
    api50, api95 = percentiles(api.latencies_ms)
    ws50, ws95 = percentiles(sockets.latencies_ms)
    for problem in api.first_errors + sockets.first_errors:
        print("error:", problem)
    name = "embedded (SQLite, file broker)" if args.profile == "embedded" else "PostgreSQL + Redis"
    from django.conf import settings

    # Unset, serve's own default (from the host's cores, webapp/cores.py) is what ran.
    workers = args.web_workers or settings.GROUPWISE_WEB_WORKERS
    name += f", {workers} web process{'es' if workers > 1 else ''}"
    name += "" if args.web_workers else " (serve's default)"
    return (
        f"| {name} | {sent} | {api.errors} | {api50:.0f} | {api95:.0f} "
        f"| {args.viewers} | {len(sockets.latencies_ms)} | {sockets.errors} | {ws50:.0f} "
        f"| {ws95:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="API requests per second")
    parser.add_argument(
        "--web-workers", type=int, help="server processes (default: serve's, from the cores)"
    )
    args = parser.parse_args()
    row = run_profile(args)
    table = "\n".join(
        [
            heading(f"Load, {args.profile}"),
            "",
            f"`bench/load.py --profile {args.profile} --seconds {args.seconds:g}"
            + (f" --web-workers {args.web_workers}" if args.web_workers else "")
            + "`: "
            f"{args.viewers} sockets on a training "
            f"tiny-color run plus {args.rate:g} API requests/s for {args.seconds:g} s, server, "
            "worker and load generator on the same machine. Delivery: engine event time to "
            "socket receipt.",
            "",
            "| profile | API requests | API errors | API p50 ms | API p95 ms | sockets "
            "| deliveries | socket errors | delivery p50 ms | delivery p95 ms |",
            "|---|---|---|---|---|---|---|---|---|---|",
            row,
            "",
        ]
    )
    publish(table)


if __name__ == "__main__":
    main()
