"""Objects bigger than one Lambda: ranged scan vs spooled scan, and range-parallel encryption by workers.

    .venv/bin/python benchmarks/ranges_bench.py                # 4 GiB object (sparse, in /dev/shm)
    .venv/bin/python benchmarks/ranges_bench.py --size 1G      # quicker

Each case runs in its own subprocess so its peak RSS (/proc VmHWM) is its own.
* scan: "spooled" copies the object to a work directory (what the pipeline does today for objects that
  fit in ephemeral storage) and scans the file; "ranged" scans through `RangedObject` (1 MiB blocks,
  64-block cache) reading only what the scanner touches. The object is a safetensors file.
* encrypt: `RangeEncryptor` with 1, 2, 4, 8 workers, each range read with pread, sealed, and given an
  S3-style part checksum (SHA-256), like `crypto.s3_ranges`. Two read models: "local" (page cache, so
  CPU-bound: this machine has 2 cores) and "s3-like" (each ranged GET waits 20 ms for the first byte and
  then streams at 80 MB/s, the per-connection figure S3 gives a Lambda; the wait releases the GIL as a
  socket read would). The s3-like rows show how workers hide per-stream bandwidth; the local rows show
  the CPU ceiling of the machine running the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_mib  # benchmarks/ is sys.path[0] for its scripts

MiB = 1 << 20
GiB = 1 << 30
HERE = Path(__file__).resolve().parent
FIRST_BYTE_S = 0.020
STREAM_BYTES_PER_S = 80e6


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": GiB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def make_object(path: Path, size: int) -> None:
    """A sparse safetensors file: a real header, then zeros the scanner never needs to read."""
    tensors = 16
    per = (size - 4096) // tensors // 4 * 4
    header: dict[str, Any] = {"__metadata__": {"license": "apache-2.0"}}
    for i in range(tensors):
        header[f"layer{i}.weight"] = {
            "dtype": "F32",
            "shape": [per // 4],
            "data_offsets": [i * per, (i + 1) * per],
        }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + tensors * per)


class _FileRanges:
    """`RangedObject` over a local file (pread instead of a ranged GET), optionally paced like S3."""

    @staticmethod
    def make(path: Path, *, paced: bool) -> Any:
        from modelshield.ranged import RangedObject

        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size

        class FileObject(RangedObject):
            def fetch(self, start: int, end: int) -> bytes:
                began = time.monotonic()
                data = os.pread(fd, end - start, start)
                if paced:
                    wait = FIRST_BYTE_S + len(data) / STREAM_BYTES_PER_S - (time.monotonic() - began)
                    if wait > 0:
                        time.sleep(wait)
                self.bytes_fetched += len(data)
                self.requests += 1
                return data

        return FileObject(None, "local", str(path), size=size)


def case_scan(path: Path, mode: str, workdir: Path) -> dict[str, Any]:
    from modelshield.scanning.registry import scan_path, scan_stream

    started = time.monotonic()
    if mode == "spooled":
        spool = workdir / "artifact-spool"
        with path.open("rb") as src, spool.open("wb") as dst:
            shutil.copyfileobj(src, dst, 8 * MiB)
        report = scan_path(spool, sha256="-")
        spool.unlink()
        read = path.stat().st_size
    else:
        source = _FileRanges.make(path, paced=False)
        report = scan_stream(source, path.name, sha256="-", size=source.size)
        read = source.bytes_fetched
    return {
        "case": f"scan {mode}",
        "seconds": round(time.monotonic() - started, 3),
        "bytes_read": read,
        "format": report.format.value,
        "findings": len(report.findings),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def case_encrypt(path: Path, workers: int, paced: bool) -> dict[str, Any]:
    from modelshield.crypto.ranges import RangeEncryptor
    from modelshield.crypto.s3_ranges import range_size_for

    source = _FileRanges.make(path, paced=paced)
    frame = 4 * MiB
    encryptor = RangeEncryptor(source.size, frame_length=frame, range_size=range_size_for(source.size, frame))
    from modelshield.crypto import checksums

    crcs: dict[int, int] = {}

    def emit(rng: Any, sealed: bytearray) -> None:
        crcs[rng.index] = checksums.crc(sealed)  # what UploadPart's ChecksumCRC64NVME costs

    started = time.monotonic()
    pending = encryptor.run(lambda r: source.fetch(r.start, r.end), emit, workers=workers)
    seconds = time.monotonic() - started
    return {
        "case": f"encrypt {'s3-like' if paced else 'local'} x{workers}",
        "seconds": round(seconds, 3),
        "gb_per_s": round(source.size / seconds / 1e9, 3),
        "ranges": len(encryptor.ranges),
        "sha256": pending.body.plaintext_sha256,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def _run_case(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--case", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="4G", help="object size (default 4G)")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        kind, path = args.case[0], Path(args.case[1])
        if kind == "scan":
            result = case_scan(path, args.case[2], Path(args.case[3]))
        else:
            result = case_encrypt(path, int(args.case[2]), args.case[3] == "paced")
        print(json.dumps(result))
        return 0
    size = _size(args.size)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=base) as tmp, tempfile.TemporaryDirectory() as spool_dir:
        obj = Path(tmp) / "model.safetensors"
        make_object(obj, size)
        rows = [_run_case(["scan", str(obj), mode, spool_dir]) for mode in ("spooled", "ranged")]
        for paced in (False, True):
            for workers in (int(w) for w in args.workers.split(",")):
                rows.append(_run_case(["encrypt", str(obj), str(workers), "paced" if paced else "local"]))
    print(
        f"object: {size / GiB:.2f} GiB safetensors; cores: {os.cpu_count()}; python {sys.version.split()[0]}"
    )
    print("| case | seconds | GB/s | bytes read | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['case']} | {row['seconds']} | {row.get('gb_per_s', '')} | "
            f"{row.get('bytes_read', '')} | {row['peak_rss_mib']} |"
        )
    digests = {row["sha256"] for row in rows if "sha256" in row}
    if len(digests) != 1:
        print("ERROR: workers disagree on the plaintext digest", digests)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
