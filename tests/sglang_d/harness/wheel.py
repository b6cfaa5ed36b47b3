"""sglang 0.5.23's wheel, fetched once and unpacked into a cache that reruns reuse.

The cache is ``$GROUPWISE_SGLANG_CACHE`` or ``<venv>/sglang-wheel`` (the interpreter's prefix:
``make test``'s ``.venv``); only the diffusion runtime and one module of ``sglang.srt`` are
unpacked (a few MB of the 39 MB wheel). Failing to fetch it is an error, never a skip: the
tests against the real code are the point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.5.23"
#: The members the harness loads: the diffusion runtime and the JSON response helper.
MEMBERS = ("sglang/multimodal_gen/", "sglang/srt/utils/json_response.py", "sglang/version.py")
#: The wheel's tags, named so that pip fetches it whatever interpreter runs the tests (the
#: modules loaded are pure Python).
TAGS = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--platform", "manylinux_2_34_x86_64")  # fmt: skip


class WheelUnavailable(RuntimeError):
    """The wheel could not be fetched or unpacked; the message says why and what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("GROUPWISE_SGLANG_CACHE") or Path(sys.prefix) / "sglang-wheel")


def unpacked() -> Path:
    """The folder holding ``sglang/`` of the release, fetched and unpacked on first use."""
    target = cache_root() / VERSION
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fetched = Path(scratch) / "wheel"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *TAGS,
                   f"sglang=={VERSION}", "-d", str(fetched)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(fetched.glob("sglang-*.whl"))
        if done.returncode != 0 or not wheels:
            raise WheelUnavailable(
                f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-2000:]}\n"
                "The sglang tests need the release's wheel from the package index; set "
                "GROUPWISE_SGLANG_CACHE to a folder holding an unpacked copy to work offline."
            )
        staging = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if n.startswith(MEMBERS)]
            wheel.extractall(staging, members=names)
        (staging / ".complete").write_text(wheels[0].name + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            # Another session unpacked it meanwhile: theirs is as good.
            shutil.rmtree(staging, ignore_errors=True)
    if not (target / ".complete").is_file():
        raise WheelUnavailable(f"{target} is incomplete: delete it and rerun")
    return target
