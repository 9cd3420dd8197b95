"""Peak resident memory of this process since the last reset (Linux: VmHWM, which a reset can clear)."""
from __future__ import annotations

import resource
import sys
from pathlib import Path


def reset_peak_rss() -> None:
    """Start a new peak: Hydra multirun jobs share one process, and an exec'd child inherits its
    parent's peak in ru_maxrss, so neither should report memory it did not use."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the process peak stands


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS counts bytes, Linux KiB
