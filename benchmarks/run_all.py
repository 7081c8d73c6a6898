"""Run every benchmark in sequence: `make bench` (full sizes) or `make bench QUICK=1` (small, ~minutes).

Each benchmark measures in its own subprocesses (peak RSS per case) and prints its own table; the numbers
quoted in docs/ come from these commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = os.environ.get("QUICK", "") not in ("", "0")

BENCHMARKS: list[tuple[str, list[str]]] = [
    (
        "envelope encryption (docs/performance.md)",
        ["crypto_bench.py", *(["--sizes", "64M"] if QUICK else [])],
    ),
    ("pickle walker and checkpoints (docs/scanner.md)", ["scan_bench.py", *(["--quick"] if QUICK else [])]),
    ("other formats in flat memory (docs/scanner-formats.md)", ["format_bench.py"]),
    ("bulk jobs on the local engine (docs/jobs.md)", ["jobs_bench.py", *(["--quick"] if QUICK else [])]),
    (
        "false alarms on the generated benign corpus (docs/scanner-comparison.md)",
        ["benign_corpus.py", "--size", "ci" if QUICK else "full"],
    ),
    (
        "dashboard metrics.json at scale (docs/dashboard.md)",
        ["dashboard_bench.py", *(["--sizes", "1000:10000"] if QUICK else [])],
    ),
    (
        "artifacts bigger than one Lambda's disk (docs/large-artifacts.md)",
        ["ranges_bench.py", "--size", "1G" if QUICK else "4G"],
    ),
    (
        "ModelShield vs public scanners (docs/scanner-comparison.md)",
        ["compare_scanners.py", *(["--quick"] if QUICK else [])],
    ),
    (
        "uploads through the local stack: verdicts/s over time, lost, doubled, DLQ (docs/performance.md)",
        ["load_bench.py", "--uploads", "100" if QUICK else "1000"],
    ),
]


def main() -> int:
    failures = 0
    for title, command in BENCHMARKS:
        print(f"\n=== {title}: python benchmarks/{' '.join(command)}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], check=False)
        print(f"=== {title}: exit {result.returncode} in {time.monotonic() - started:.0f}s", flush=True)
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
