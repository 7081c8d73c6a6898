"""Run one command and report its wall time, exit status and peak RSS as JSON: a tiny launcher.

Why a launcher: on Linux a child's ru_maxrss starts from the memory of the process that forked it (the
pre-exec address space is counted at exec). compare_scanners.py holds torch and hundreds of MiB, so
spawning tools from it directly would report that as every tool's peak. This script runs under
`python -S -I` (about 10 MiB, below any tool's own interpreter), forks, puts the child in its own
process group, execs the tool, and reads the child's rusage from os.wait4. On timeout it kills the
whole group and still reports the peak reached so far.

    python -S -I _measure.py REPORT.json TIMEOUT_SECONDS -- COMMAND [ARG ...]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write(__doc__ or "")
        return 64
    report, timeout, command = argv[0], float(argv[1]), argv[3:]
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: own process group, so a timeout can kill everything the tool started
        try:
            os.setpgid(0, 0)
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    timed_out = False
    delay = 0.002
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            break
        if time.monotonic() - start > timeout:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    result = {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_seconds": time.monotonic() - start,
        "max_rss_kib": usage.ru_maxrss,
        "timed_out": timed_out,
    }
    with open(report, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
