"""The peak resident memory of the calling process, the one figure every benchmark reports.

Read from /proc/self/status (VmHWM), not from getrusage's ru_maxrss: on Linux ru_maxrss carries the
high-water mark across exec, and subprocess starts children with vfork, so a case run in a child would
report its parent's peak. Benchmarks run each case in its own process (`python BENCH.py --case ...`, whose
sys.path starts with this directory) and call `peak_rss_mib()` there.
"""

from __future__ import annotations

import resource

MiB = 1024 * 1024


def peak_rss_bytes() -> int:
    """This process's own peak RSS since exec, in bytes (ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_mib() -> float:
    return peak_rss_bytes() / MiB
