"""Pickle-family scanner benchmarks: walker speed vs pickletools.genops, peak RSS, tensor bytes unread.

    .venv/bin/python benchmarks/scan_bench.py                 # ~200 MB dense pickle + 1 GiB checkpoint
    .venv/bin/python benchmarks/scan_bench.py --quick         # 20 MB / 128 MiB, for a smoke run

Samples are generated into benchmarks/.data/ (gitignored) on first use. Each timing is the best of
`--repeat` interleaved runs (on a shared machine the minimum is the least noisy estimate); `--clock cpu`
times this process's CPU time instead of the wall clock, which other jobs on a loaded machine disturb
far less (both sides are single-threaded, so the ratio means the same). Peak RSS is measured in a fresh
subprocess per scan (ru_maxrss of a child that imports the scanner and scans).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / ".data"
MiB = 1 << 20
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def _records(n: int) -> list[tuple[int, str, float, bool]]:
    pool = [f"name_{i}" for i in range(1000)]
    return [(i, pool[i % 1000], i * 0.5, i % 3 == 0) for i in range(n)]


SHAPES: dict[str, Any] = {
    # bytes per element, builder
    "records": (22, _records),
    "ints": (4, lambda n: list(range(n))),
    "strings": (12, lambda n: [f"s{i}" for i in range(n)]),
    "nested": (33, lambda n: [[i, f"n{i % 1000}", (i, i + 1), {"k": i}] for i in range(n)]),
}


def build_pickle(shape: str, size_mb: int) -> Path:
    path = DATA / f"dense-{shape}-{size_mb}mb.pkl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        per, make = SHAPES[shape]
        value = make(size_mb * MiB // per)
        with path.open("wb") as fh:
            pickle.dump(value, fh, protocol=4)
    return path


def build_checkpoint(gib: float) -> Path:
    path = DATA / f"checkpoint-{gib:g}gib.pt"
    if not path.exists():
        import torch

        DATA.mkdir(parents=True, exist_ok=True)
        n = int(gib * (1 << 30)) // 4 // 8
        torch.save({f"layer{i}.weight": torch.zeros(n) for i in range(8)}, path)
    return path


def time_genops(path: Path) -> tuple[float, int]:
    started = clock()
    count = 0
    with path.open("rb") as fh:
        for _ in pickletools.genops(fh):
            count += 1
    return clock() - started, count


def time_walker(path: Path) -> float:
    from modelshield.scanning.pickles import PickleWalker
    from modelshield.scanning.registry import Limits, ScanContext

    ctx = ScanContext(limits=Limits(max_pickle_memo=1 << 24), location=str(path))
    ctx.shared.deadline = time.monotonic() + 3600
    started = clock()
    with path.open("rb") as fh:
        walk = PickleWalker(fh, ctx).walk(0, path.stat().st_size)
    elapsed = clock() - started
    assert walk.stopped and not walk.error, walk.error
    return elapsed


# Each child reports its own peak (benchmarks/peak_rss.py), not ru_maxrss, which carries the parent's.
_HERE = str(Path(__file__).resolve().parent)
_PEAK = f"import sys; sys.path.insert(0, {_HERE!r}); from peak_rss import peak_rss_mib\n"
_CHILD = """
import json, sys, time
from modelshield.scanning import scan_path
from modelshield.scanning.registry import Limits
started = time.perf_counter()
report = scan_path(sys.argv[1], limits=Limits(max_pickle_memo=1 << 24), sha256="not-computed")
print(json.dumps({"seconds": time.perf_counter() - started,
                  "rss_mb": peak_rss_mib(),
                  "findings": [f.rule.value for f in report.findings], "format": report.format.value}))
"""


def scan_in_subprocess(path: Path) -> dict[str, Any]:
    code = _PEAK + _CHILD
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def baseline_rss_mb() -> float:
    code = _PEAK + "import modelshield.scanning; print(peak_rss_mib())"
    return float(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    )


class CountingReader(io.RawIOBase):
    """Wraps a file and counts the bytes actually read through it."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb", buffering=0)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto(b)
        self.bytes_read += n or 0
        return n or 0


def checkpoint_reads(path: Path) -> tuple[int, float, list[str]]:
    from modelshield.scanning import scan_stream

    reader = CountingReader(path)
    started = time.perf_counter()
    report = scan_stream(reader, str(path), sha256="not-computed")  # type: ignore[arg-type]
    return reader.bytes_read, time.perf_counter() - started, [f.rule.value for f in report.findings]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=200, help="size of the dense 'records' pickle")
    parser.add_argument("--shape-mb", type=int, default=20, help="size of the other dense shapes")
    parser.add_argument("--torch-gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what the timings measure")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.quick:
        args.size_mb, args.shape_mb, args.torch_gib, args.repeat = 20, 5, 0.125, 1

    rows = []
    cases = [("records", args.size_mb)] + [(s, args.shape_mb) for s in SHAPES if s != "records"]
    for shape, size in cases:
        path = build_pickle(shape, size)
        genops, walker = float("inf"), float("inf")
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            genops = min(genops, time_genops(path)[0])
            walker = min(walker, time_walker(path))
        rows.append((f"dense pickle: {shape}", path.stat().st_size, genops, walker))

    print(f"{'sample':28s} {'MB':>8s} {'genops s':>9s} {'walker s':>9s} {'speed-up':>8s} {'MB/s':>7s}")
    for label, size, genops, walker in rows:
        ratio, rate = genops / walker, size / 1e6 / walker
        print(f"{label:28s} {size / 1e6:8.1f} {genops:9.2f} {walker:9.2f} {ratio:7.1f}x {rate:7.1f}")

    base = baseline_rss_mb()
    big = build_pickle("records", args.size_mb)
    child = scan_in_subprocess(big)
    print(
        f"\nfull scan of {big.name} in a subprocess: {child['seconds']:.2f} s, "
        f"peak RSS {child['rss_mb']:.0f} MB (interpreter + scanner imports alone: {base:.0f} MB), "
        f"findings: {child['findings'] or 'none'}"
    )

    ckpt = build_checkpoint(args.torch_gib)
    read, seconds, findings = checkpoint_reads(ckpt)
    child = scan_in_subprocess(ckpt)
    print(
        f"{ckpt.name}: {ckpt.stat().st_size / (1 << 30):.2f} GiB file, scanner read {read / 1024:.1f} KiB "
        f"in {seconds * 1000:.0f} ms, peak RSS {child['rss_mb']:.0f} MB, findings: {findings or 'none'}"
    )


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    main()
