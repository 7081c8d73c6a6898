"""Coverage-guided fuzzing of the non-pickle scanners with atheris (optional; the unit tests use hypothesis).

Run from the repository root: `PYTHONPATH=. .venv/bin/python tests/fuzz/fuzz_formats.py -max_len=8192
-atheris_runs=100000` (add a corpus directory to keep the inputs it learns; crash inputs go to the temp
directory unless -artifact_prefix says). The first input byte picks a seed format; the rest is overlaid
on that seed. A scanner that raises (reported by dispatch as "<format> scanner failed") or a scan slower
than 10 s stops the run, and libFuzzer saves the input.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time

import atheris

with atheris.instrument_imports():
    from modelshield.scanning import Limits, scan_stream

from tests.corpus.formats import crash_prefixes, fuzz_seeds

CRASH_PREFIXES = crash_prefixes()

LIMITS = Limits(timeout_seconds=20, max_metadata_bytes=1 << 20, max_uncompressed_bytes=64 << 20)
SEEDS = list(fuzz_seeds().values())


def one_input(data: bytes) -> None:
    if not data:
        return
    seed = SEEDS[data[0] % len(SEEDS)]
    body = data[1:]
    # Overlay the fuzzer's bytes on the seed so most inputs keep a valid-looking prefix.
    sample = body + seed[len(body) :] if len(body) < len(seed) else body
    started = time.monotonic()
    report = scan_stream(io.BytesIO(sample), "fuzz.bin", limits=LIMITS)
    crashes = [f.message for f in report.findings if f.message.startswith(CRASH_PREFIXES)]
    if crashes:
        raise AssertionError(crashes)
    if time.monotonic() - started > 10:
        raise AssertionError("scan took more than 10 s")


def main() -> None:
    argv = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        argv.append(f"-artifact_prefix={tempfile.gettempdir()}/modelshield-fuzz-")  # not the repository
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
