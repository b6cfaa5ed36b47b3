"""What a worker records about itself when it claims a run, so the run can be reproduced."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("groupwise", "torch", "diffusers", "transformers", "peft", "numpy", "django", "celery")
REPO = Path(__file__).resolve().parents[2]


def reproducibility_record() -> dict[str, Any]:
    """Project commit, package versions, host and device of this process."""
    return {
        "commit": _commit(),
        "packages": {name: _version(name) for name in PACKAGES},
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "device": _device(),
    }


def _commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}"
