"""Exports through `manage.py serve`: time to first byte, throughput, and the web process's memory.

Starts the dashboard (embedded profile, web process only) on a scratch folder, stores a run whose
samples zip is about ``--samples-gib`` GiB (random-byte PNG files, which zip cannot shrink; each
file is pointed at by several sample rows, as the archive reads a file per row) and a full
fine-tune checkpoint with a ``--weights-gib`` GiB ``model.safetensors`` (saved by the engine's own
``save_checkpoint``), then downloads both exports as a browser would. While a download runs, the
uvicorn process's resident memory (VmRSS) is sampled every 20 ms; the table gives the growth of
its peak over its size before the download. Prints a table and appends it to docs/performance.md.

    .venv/bin/python bench/export_stream.py [--samples-gib 2 --weights-gib 1]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from report import heading, publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from load import profile_env  # noqa: E402

from engine.net.ports import free_port  # noqa: E402

#: Bytes per random image file, and sample rows pointing at each.
IMAGE_BYTES = 64 << 20
ROWS_PER_IMAGE = 4
READ = 1 << 20


@dataclass
class Download:
    name: str
    size: int
    first_byte: float
    total: float
    rss_before: int
    rss_peak: int


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def web_pid(serve: int) -> int:
    """The uvicorn process serve started (its only child running uvicorn)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == serve and b"uvicorn" in command:
            return int(entry.name)
    raise RuntimeError(f"serve ({serve}) has no uvicorn child")


def download(port: int, path: str, session: str, pid: int, name: str) -> Download:
    peak = before = rss_kib(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", path, headers={"Cookie": f"sessionid={session}"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {response.read()[:300]!r}")
    first = response.read1(READ)
    first_byte = time.perf_counter() - started
    size = len(first)
    while chunk := response.read1(READ):
        size += len(chunk)
    total = time.perf_counter() - started
    connection.close()
    done.set()
    sampler.join()
    return Download(name, size, first_byte, total, before, max(peak, rss_kib(pid)))


def store(scratch: Path, samples_gib: float, weights_gib: float) -> tuple[str, int]:
    """The bench user's session key and the id of its run with samples and a checkpoint."""
    import torch
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from engine.overrides import apply_overrides
    from engine.recipe import Recipe
    from engine.run.checkpoint import CheckpointState, save_checkpoint
    from webapp.runs.models import Checkpoint, Run, Sample

    user = User.objects.create_user("bench")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    recipe = apply_overrides(Recipe(), {"family": "sd3", "lora_target": "full"}).to_dict()
    run = Run.objects.create(owner=user, name="export bench", recipe=recipe, max_steps=1)

    media = scratch / "media" / "runs" / str(run.pk)
    media.mkdir(parents=True)
    files = max(1, round(samples_gib * (1 << 30) / (IMAGE_BYTES * ROWS_PER_IMAGE)))
    rows = []
    for index in range(files):
        (media / f"{index}.png").write_bytes(os.urandom(IMAGE_BYTES))
        for copy in range(ROWS_PER_IMAGE):
            rows.append(
                Sample(
                    run=run, step=1, rollout_index=1, group_index=index, prompt=f"prompt {index}",
                    index_in_group=copy, image=f"runs/{run.pk}/{index}.png",
                    thumbnail=f"runs/{run.pk}/{index}.png", reward=0.5, components={},
                    advantage=0.0, seed=index * ROWS_PER_IMAGE + copy,
                )
            )  # fmt: skip
    Sample.objects.bulk_create(rows)

    weights = torch.randint(0, 256, (int(weights_gib * (1 << 30)),), dtype=torch.uint8)
    state = CheckpointState(
        step=1, recipe=recipe, model={"transformer.weight": weights}, optimizer={}, rng={}
    )
    folder = save_checkpoint(scratch / "runs" / str(run.pk), state)
    del weights, state
    Checkpoint.objects.create(run=run, step=1, path=str(folder))
    return str(session.session_key), run.pk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-gib", type=float, default=2.0)
    parser.add_argument("--weights-gib", type=float, default=1.0)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="gw-export-bench-"))
    # The load bench's embedded environment; this process sets Django up on the same database.
    env = {**profile_env("embedded", scratch, None), "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    os.environ.clear()
    os.environ.update(env)
    port = free_port()
    log_path = scratch / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--migrate", "--no-worker",
             "--web-workers", "1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    ok = False
    try:
        deadline = time.monotonic() + 180
        while b"running at" not in log_path.read_bytes():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.2)
        import django

        django.setup()
        session, run = store(scratch, args.samples_gib, args.weights_gib)
        pid = web_pid(server.pid)
        results = [
            download(port, f"/runs/{run}/export/samples.zip", session, pid, "samples zip"),
            download(port, f"/runs/{run}/export/weights.zip", session, pid, "weights zip"),
        ]
        ok = True
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        if ok:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch} (serve.log says why)")

    lines = [
        heading(
            "Exports through `manage.py serve` (bench/export_stream.py)",
            "embedded profile, one web process, client on the same host",
        ),
        "",
        "| export | size | first byte | total | throughput | web RSS before | peak | growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.size / (1 << 30):.2f} GiB | {r.first_byte * 1000:.0f} ms "
            f"| {r.total:.1f} s | {r.size / (1 << 20) / r.total:.0f} MiB/s "
            f"| {r.rss_before / 1024:.0f} MiB | {r.rss_peak / 1024:.0f} MiB "
            f"| {(r.rss_peak - r.rss_before) / 1024:+.0f} MiB |"
        )
    publish("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
