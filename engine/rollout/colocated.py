"""Colocated mode: the worker starts a rollout server for the run's model and stops it after.

``ColocatedServer`` runs ``<command> --model-path DIR --host 127.0.0.1 --port P`` (sglang's
``sglang serve`` flags; ``python -m engine serve-rollout`` takes the same), waits for its
``/health`` until a deadline, and stops it when the block ends, however it ends. On Linux the
child also gets SIGTERM if the worker dies without cleaning up (PR_SET_PDEATHSIG), so no
server outlives its run. The command is the worker host's configuration
(``engine.rollout.launch.server_command``), never a recipe's.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from engine.net.ports import free_port

#: How often /health is asked while the server starts.
POLL_SECONDS = 0.2
#: How long a stopped server gets to exit before it is killed.
STOP_SECONDS = 10.0


class ServerStartError(RuntimeError):
    """The colocated server exited or did not become healthy in time."""


class ColocatedServer:
    """A rollout server subprocess for one run; use as a context manager."""

    def __init__(
        self,
        command: str,
        model_path: str,
        *,
        log_path: Path,
        startup_timeout: float = 900.0,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.argv = [
            *shlex.split(command), "--model-path", model_path,
            "--host", host, "--port", str(self.port),
        ]  # fmt: skip
        self.log_path, self.startup_timeout = log_path, startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ColocatedServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the server, killing it if it does not exit within ``STOP_SECONDS``."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"rollout server `{shlex.join(self.argv)}` exited with code {code} before "
                    f"it was healthy; its output:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"rollout server at {self.url} not healthy after {self.startup_timeout} s "
                    f"(rollout.startup_timeout); its output:\n{_tail(self.log_path)}"
                )
            time.sleep(POLL_SECONDS)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
