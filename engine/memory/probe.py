"""Peak memory of a stretch of work, measured afresh each time (the microgroup sweep's memory).

On CUDA it is the caching allocator's peak, whose statistics reset at each ``start``. On CPU it
is the process's peak resident set size: Linux resets that high-water mark (VmHWM) to the
current RSS when "5" is written to /proc/self/clear_refs; where that is not allowed the probe
falls back to ``getrusage``'s ru_maxrss, a process-lifetime peak that only shows growth beyond
every earlier peak. ``MemoryProbe.source`` says which one was used.
"""

from __future__ import annotations

import gc
import resource
import sys
from typing import Literal

import torch

Method = Literal["cuda", "vmhwm", "ru_maxrss"]

SOURCES: dict[Method, str] = {
    "cuda": "cuda max_memory_allocated, reset per size",
    "vmhwm": "peak RSS (VmHWM), reset per size",
    "ru_maxrss": "ru_maxrss: process-lifetime peak RSS, not resettable (growth only)",
}


class MemoryProbe:
    """``start()``, the work, then ``stop()`` -> (peak bytes, peak minus the bytes in use at
    ``start``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method: Method = (
            "cuda" if device.type == "cuda" else "vmhwm" if reset_peak_rss() else "ru_maxrss"
        )
        self.baseline = 0

    @property
    def source(self) -> str:
        """How the peak is measured, in words, for reports."""
        return SOURCES[self.method]

    def start(self) -> None:
        # Garbage of earlier work would otherwise be freed, or not, in the middle of this one.
        gc.collect()
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        elif self.method == "vmhwm":
            reset_peak_rss()
            self.baseline = status_bytes("VmRSS")
        else:
            self.baseline = max_rss()

    def stop(self) -> tuple[int, int]:
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "vmhwm":
            peak = status_bytes("VmHWM")
        else:
            peak = max_rss()
        return peak, max(peak - self.baseline, 0)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return status_bytes("VmHWM") > 0


def status_bytes(key: str) -> int:
    """A ``kB`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; 0 when absent."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def max_rss() -> int:
    """The process's lifetime peak RSS in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
