"""Process memory figures for progress lines and benchmarks (no dependency beyond the stdlib)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """High-water resident set size of this process image, in MB.

    Linux: VmHWM, which starts afresh at exec. `ru_maxrss` does not: it keeps the RSS the parent
    had when it forked this process, so a child of a big process would report the parent's size.
    Elsewhere ru_maxrss is the best available (macOS reports bytes, Linux KiB); NaN on Windows.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """Resident set size now, in MB (Linux; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return float("nan")
