"""sglang 0.5.23's wheel, fetched once and unpacked into a cache that reruns reuse.

The cache is ``$GROUPWISE_SGLANG_CACHE`` or ``<venv>/sglang-wheel`` (the interpreter's prefix:
``make test``'s ``.venv``): the wheel, and the diffusion runtime and two files of
``sglang.srt`` unpacked from it. Failing to fetch it is an error, never a skip: the
tests against the real code are the point.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.5.23"
#: The members the harness loads: the diffusion runtime, the JSON response helper and the
#: file of ``SafeUnpickler`` (compiled alone: ``modules.real_function``).
MEMBERS = ("sglang/multimodal_gen/", "sglang/srt/utils/json_response.py",
           "sglang/srt/utils/common.py")  # fmt: skip
#: The wheel's tags, named so that pip fetches it whatever interpreter runs the tests (the
#: modules loaded are pure Python).
TAGS = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--platform", "manylinux_2_34_x86_64")  # fmt: skip


class WheelUnavailable(RuntimeError):
    """The wheel could not be fetched or unpacked; the message says why and what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("GROUPWISE_SGLANG_CACHE") or Path(sys.prefix) / "sglang-wheel")


def unpacked() -> Path:
    """The folder holding ``sglang/`` of the release, fetched and unpacked on first use (the
    wheel is kept beside it, so that a change of ``MEMBERS`` unpacks again offline)."""
    root = cache_root()
    target, marker = root / VERSION, "\n".join(MEMBERS) + "\n"
    complete = target / ".complete"
    if complete.is_file() and complete.read_text() == marker:
        return target
    root.mkdir(parents=True, exist_ok=True)
    wheel = _wheel(root)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        staging = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.startswith(MEMBERS)]
            archive.extractall(staging, members=names)
        (staging / ".complete").write_text(marker)
        shutil.rmtree(target, ignore_errors=True)
        # Another session may have unpacked it meanwhile: theirs is as good.
        with contextlib.suppress(OSError):
            os.replace(staging, target)
    if not (complete.is_file() and complete.read_text() == marker):
        raise WheelUnavailable(f"{target} is incomplete: delete it and rerun")
    return target


def _wheel(root: Path) -> Path:
    cached = sorted(root.glob(f"sglang-{VERSION}-*.whl"))
    if cached:
        return cached[0]
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *TAGS,
                   f"sglang=={VERSION}", "-d", scratch]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(scratch).glob("sglang-*.whl"))
        if done.returncode != 0 or not wheels:
            raise WheelUnavailable(
                f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-2000:]}\n"
                "The sglang tests need the release's wheel from the package index; set "
                "GROUPWISE_SGLANG_CACHE to a folder holding it (sglang-0.5.23-*.whl) to work "
                "offline."
            )
        os.replace(wheels[0], root / wheels[0].name)
    return root / wheels[0].name
