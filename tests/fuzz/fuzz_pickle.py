"""atheris harness for the pickle-family scanners: coverage-guided bytes into scan_stream.

Run: .venv/bin/python tests/fuzz/fuzz_pickle.py -max_total_time=300
(atheris is optional: .venv/bin/pip install atheris)
A pickle-family scanner exception (reported by dispatch as "scanner failed") or a scan over 30 s is a crash.
"""

from __future__ import annotations

import io
import sys
import time

import atheris

with atheris.instrument_imports():
    from modelshield.scanning import Limits, scan_stream

LIMITS = Limits(timeout_seconds=20, max_uncompressed_bytes=64 << 20)
# crashes of the pickle-family scanners (other formats have their own harness, fuzz_formats.py)
OURS = tuple(f"{f} scanner failed" for f in ("pickle", "pytorch", "torchscript", "joblib", "numpy"))
SEED_PREFIXES = [b"", b"\x80\x02", b"\x80\x04", b"\x80\x05", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"ZF"]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    prefix = SEED_PREFIXES[fdp.ConsumeIntInRange(0, len(SEED_PREFIXES) - 1)]
    body = prefix + fdp.ConsumeBytes(fdp.remaining_bytes())
    started = time.monotonic()
    report = scan_stream(io.BytesIO(body), "fuzz.bin", limits=LIMITS)
    if time.monotonic() - started > 30:  # generous: a shared machine stalls now and then
        raise RuntimeError("scan took longer than 30 s")
    for finding in report.findings:
        if finding.message.startswith(OURS):
            raise RuntimeError(finding.message)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
