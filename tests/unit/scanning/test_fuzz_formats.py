"""Property tests: random and mutated inputs never crash a format scanner, escape scan_stream, or hang.

A scanner that raises is caught by dispatch and reported as "<format> scanner failed", which fails closed
but is still a bug: these tests treat that message as a failure for the formats in this suite.
"""

from __future__ import annotations

import io
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelshield.models import RuleId
from modelshield.scanning import Limits, scan_stream
from modelshield.scanning.jinja import analyse_template

from tests.corpus import formats as corpus

EXAMPLES = max(200, settings.default.max_examples)  # `make fuzz` may raise it through a profile
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(timeout_seconds=20, max_metadata_bytes=1 << 20, max_uncompressed_bytes=64 << 20)
CRASH_PREFIXES = corpus.crash_prefixes()


def _scan(data: bytes) -> None:
    started = time.monotonic()
    report = scan_stream(io.BytesIO(data), "fuzz.bin", limits=LIMITS)
    elapsed = time.monotonic() - started
    crashes = [f.message for f in report.findings if f.message.startswith(CRASH_PREFIXES)]
    assert not crashes, crashes
    assert not any(f.rule is RuleId.SCAN_INCOMPLETE and "deadline" in f.message for f in report.findings)
    assert elapsed < 10, f"scan took {elapsed:.1f}s"


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed with byte flips, an optional splice of random bytes, and an optional truncation."""
    data = bytearray(corpus.fuzz_seeds()[name])
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _mutation_test(name: str) -> None:
    @FUZZ
    @given(mutated(name))
    def run(data: bytes) -> None:
        _scan(data)

    run()


def test_fuzz_zip() -> None:
    _mutation_test("zip")


def test_fuzz_tar() -> None:
    _mutation_test("tar")


def test_fuzz_compressed() -> None:
    _mutation_test("gzip")
    _mutation_test("xz")


def test_fuzz_keras() -> None:
    _mutation_test("keras")


def test_fuzz_hdf5() -> None:
    _mutation_test("h5")


def test_fuzz_onnx() -> None:
    _mutation_test("onnx")


def test_fuzz_savedmodel() -> None:
    _mutation_test("savedmodel")


def test_fuzz_gguf() -> None:
    _mutation_test("gguf")


def test_fuzz_safetensors() -> None:
    _mutation_test("safetensors")


def test_fuzz_text() -> None:
    _mutation_test("text")


MAGICS = [
    b"PK\x03\x04",
    b"GGUF\x03\x00\x00\x00",
    b"\x89HDF\r\n\x1a\n",
    b"\x1f\x8b\x08",
    b"\x08\x08\x12",
    b"BZh9",
]


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_fuzz_random_bytes_behind_each_magic(magic: bytes, tail: bytes) -> None:
    _scan(magic + tail)


@FUZZ
@given(st.binary(max_size=64).map(lambda b: b[:8]), st.text(max_size=512))
def test_fuzz_safetensors_headers(length: bytes, header: str) -> None:
    raw = ("{" + header).encode()
    _scan(len(raw).to_bytes(8, "little") + raw + length)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("{}%#-+'\"\\_.[]()|~ ax0_")), max_size=300))
def test_fuzz_jinja_analysis_never_raises(template: str) -> None:
    issues = analyse_template(template)
    assert all(i.rule in (RuleId.CODE_EXEC, RuleId.CODE_UNKNOWN, RuleId.MALFORMED) for i in issues)


# Inputs the atheris harness found (each crashed a scanner once); overlaid on a seed as the harness does.
REGRESSIONS = {
    "zip local walk into corrupt deflate": ("gguf", b"PK\x03\x04\x08\x08\x89\x08\x08"),
    "zip64 end record at byte 0": ("gguf", b"PK\x05\x06\x08\n\x08" + b"\xff" * 12),
    "keras member without local header": ("keras", b"PK\x03\x04\x00\x14"),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_fuzzer_findings_stay_fixed(name: str) -> None:
    seed_name, overlay = REGRESSIONS[name]
    seed = corpus.fuzz_seeds()[seed_name]
    _scan(overlay + seed[len(overlay) :])
