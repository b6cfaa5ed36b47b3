"""Exports and media through the real server (`manage.py serve`: uvicorn, Django's ASGI handler).

A samples export sends its first bytes before the archive is made: its last image is replaced
once they have arrived, and the archive holds the new image (the first, 32 MiB, holds the server
back: it sends no faster than the client reads, and socket buffers hold a few MiB). A weights
export whose weights file is a named pipe shows the server stop reading it once the client has
gone, and remove its scratch folder.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

from engine.overrides import apply_overrides
from engine.recipe import Recipe
from tests.waiting import wait_until
from tests.webapp.servers import Dashboard, run_dashboard

DEADLINE = 60.0
#: Makes a user with a session, and their run; prints the session key and the run id.
SEED = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from webapp.runs.models import Run
user = User.objects.create_user("streamer")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
run = Run.objects.create(owner=user, name="stream", recipe={}, max_steps=1)
print(json.dumps({"session": session.session_key, "run": run.pk}))
"""


def sample_rows(run: int, images: list[str]) -> str:
    return (
        "from webapp.runs.models import Sample\n"
        f"for index, image in enumerate({images!r}):\n"
        f"    Sample.objects.create(run_id={run}, step=1, rollout_index=1, group_index=0,"
        " prompt='p', index_in_group=index, image=image, thumbnail=image, reward=0.5,"
        " advantage=0.0, seed=index)\n"
    )


@contextlib.contextmanager
def get(
    dashboard: Dashboard, path: str, session: str, **headers: str
) -> Iterator[http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=DEADLINE)
    connection.request("GET", path, headers={"Cookie": f"sessionid={session}", **headers})
    try:
        yield connection.getresponse()
    finally:
        connection.close()


def test_exports_stream_and_media_answer_ranges_through_the_real_server(tmp_path: Path) -> None:
    scratch = tmp_path / "server-tmp"
    scratch.mkdir()
    with run_dashboard(tmp_path, env={"TMPDIR": str(scratch)}) as dashboard:
        seeded = json.loads(dashboard.shell(SEED).strip().splitlines()[-1])
        session, run = seeded["session"], seeded["run"]
        media = tmp_path / "var" / "media" / "runs" / str(run)
        media.mkdir(parents=True)
        image = os.urandom(32 << 20)
        (media / "a.png").write_bytes(image)
        (media / "b.png").write_bytes(b"the image as it was when the download began")
        dashboard.shell(sample_rows(run, [f"runs/{run}/a.png", f"runs/{run}/b.png"]))

        samples_stream_before_the_archive_exists(dashboard, session, run, media, image)
        media_ranges(dashboard, session, run, image)
        weights_stop_when_the_client_goes(dashboard, session, run, tmp_path, scratch)
        # Every file went out through an iterator Django's ASGI handler streams: none was
        # read whole first (Django warns when it has to, and nothing silences the warning).
        assert "must consume synchronous iterators" not in dashboard.log()


def samples_stream_before_the_archive_exists(
    dashboard: Dashboard, session: str, run: int, media: Path, image: bytes
) -> None:
    marker = b"written after the first bytes arrived\n" * 1000
    with get(dashboard, f"/runs/{run}/export/samples.zip", session) as response:
        assert response.status == 200, response.read()[:500]
        assert response.getheader("Content-Type") == "application/zip"
        first = response.read1(1 << 16)
        assert first.startswith(b"PK\x03\x04")  # the manifest's member header
        (media / "b.new").write_bytes(marker)
        (media / "b.new").replace(media / "b.png")
        archive = zipfile.ZipFile(io.BytesIO(first + response.read()))
    names = archive.namelist()
    assert names[0] == "manifest.csv" and len(names) == 3
    assert archive.read(names[1]) == image
    assert archive.read(names[2]) == marker


def media_ranges(dashboard: Dashboard, session: str, run: int, image: bytes) -> None:
    url = f"/media/runs/{run}/a.png"
    with get(dashboard, url, session) as whole:
        assert whole.status == 200 and whole.getheader("Accept-Ranges") == "bytes"
        assert whole.getheader("Content-Length") == str(len(image))
        assert whole.read() == image
    with get(dashboard, url, session, Range="bytes=1000-1999") as part:
        assert part.status == 206
        assert part.getheader("Content-Range") == f"bytes 1000-1999/{len(image)}"
        assert part.read() == image[1000:2000]
    with get(dashboard, url, session, Range="bytes=-16") as tail:
        assert tail.status == 206 and tail.read() == image[-16:]
    with get(dashboard, url, session, Range=f"bytes={len(image)}-") as beyond:
        assert beyond.status == 416
        assert beyond.getheader("Content-Range") == f"bytes */{len(image)}"
    with get(dashboard, "/static/groupwise/run.js", session) as static:
        assert static.status == 200 and static.read()


def weights_stop_when_the_client_goes(
    dashboard: Dashboard, session: str, run: int, tmp_path: Path, scratch: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    recipe = apply_overrides(Recipe(), {"family": "sd3", "lora_target": "full"})
    meta = {"format": 1, "step": 3, "recipe": recipe.to_dict(), "sha256": {}}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    os.mkfifo(checkpoint / "model.safetensors")
    dashboard.shell(
        "from webapp.runs.models import Checkpoint\n"
        f"Checkpoint.objects.create(run_id={run}, step=3, path={str(checkpoint)!r})\n"
    )
    server_reading, client_gone = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def feed_the_weights() -> None:
        with (checkpoint / "model.safetensors").open("wb") as pipe:  # the server opened it
            server_reading.set()
            client_gone.wait(timeout=DEADLINE)
            written = 0
            try:
                # 1 GiB at most: a server still reading after that never stopped.
                while written < 1 << 30:
                    pipe.write(b"\0" * (1 << 16))
                    written += 1 << 16
            except BrokenPipeError:
                outcome["stopped_after"] = written
                pipe_closed = True
            else:
                pipe_closed = False
            outcome["stopped"] = pipe_closed

    feeder = threading.Thread(target=feed_the_weights, daemon=True)
    feeder.start()
    with get(dashboard, f"/runs/{run}/export/weights.zip", session) as response:
        assert response.status == 200, response.read()[:500]
        assert response.read1(1 << 16).startswith(b"PK\x03\x04")  # README.md's header
        assert server_reading.wait(timeout=DEADLINE), dashboard.log()[-3000:]
    client_gone.set()
    feeder.join(timeout=DEADLINE * 2)
    assert outcome.get("stopped") is True, outcome
    # The export's scratch folder goes with the download.
    wait_until(
        lambda: not any(scratch.glob("groupwise-run-*")), DEADLINE, what="the scratch folder gone"
    )
