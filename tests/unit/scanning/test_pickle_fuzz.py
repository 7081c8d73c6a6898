"""Property tests for the pickle family: hostile bytes never crash or hang a scanner; benign data stays clean.

A scanner exception is caught by dispatch ("<format> scanner failed") and fails closed, but it is still a
bug, so these tests treat it as a failure.
"""

from __future__ import annotations

import io
import pickle
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelshield.models import RuleId
from modelshield.scanning import Limits, scan_stream

from tests.corpus import pickle_family as corpus

EXAMPLES = max(200, settings.default.max_examples)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(timeout_seconds=20, max_uncompressed_bytes=64 << 20)


def _scan(data: bytes) -> None:
    started = time.monotonic()
    report = scan_stream(io.BytesIO(data), "fuzz.bin", limits=LIMITS)
    elapsed = time.monotonic() - started
    crashes = [f.message for f in report.findings if "scanner failed" in f.message]
    assert not crashes, crashes
    assert elapsed < 10, f"scan took {elapsed:.1f}s"


def _seeds() -> dict[str, bytes]:
    import numpy as np

    return {
        "p0": corpus.global_os_system(),
        "p2": corpus.stack_global_via_binput(),
        "p4": corpus.stack_global_via_memo(),
        "data": corpus.plain_data_pickles()["protocol4"],
        "frames": pickle.dumps([(i, str(i)) for i in range(300)], protocol=5),
        "joblib": corpus.joblib_dump({"a": np.ones((2, 3)), "o": np.array([1, None], dtype=object)}),
        "npy": corpus.npy_bytes(np.arange(6.0)),
        "npy-object": corpus.npy_object_with_payload(),
        "npz": corpus.npz_bytes(a=np.ones(2)),
        "legacy": corpus.legacy_torch(corpus.global_os_system()),
        "torch": corpus.torch_zip_evil_member(),
    }


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed with byte flips, an optional splice of random bytes, and an optional truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_fuzz_mutated_pickle_family_samples(data: bytes) -> None:
    _scan(data)


# Random opcode soup: valid opcode bytes with random arguments exercise every branch of the walker.
_OPCODES = [bytes([b]) for b in (*range(0x28, 0x33), *range(0x42, 0x59), 0x5D, *range(0x61, 0x76), 0x7D)]
_OPCODES += [bytes([b]) for b in range(0x80, 0x99)]


@FUZZ
@given(
    st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]),
    st.lists(st.tuples(st.sampled_from(_OPCODES), st.binary(max_size=12)), max_size=60),
)
def test_fuzz_opcode_soup(prefix: bytes, parts: list[tuple[bytes, bytes]]) -> None:
    _scan(prefix + b"".join(op + arg for op, arg in parts) + b".")


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_data = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=8), children, max_size=6),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=40,
)


@FUZZ
@given(_data, st.integers(0, 5))
def test_fuzz_plain_data_is_always_clean(value: object, protocol: int) -> None:
    # Given any plain Python data pickled with any protocol
    data = pickle.dumps(value, protocol=protocol)
    report = scan_stream(io.BytesIO(data), "data.pkl", limits=LIMITS)
    # Then the scan is clean and its globals agree with an independent pickletools walk
    assert not {f.rule for f in report.findings} & corpus.PROBLEM_RULES, report.findings
    expected = {g.replace("__builtin__.", "builtins.") for g in corpus.reference_globals(data)}
    assert set(report.metadata.get("globals", [])) == expected


@FUZZ
@given(
    _data, st.integers(2, 5), st.sampled_from([("os", "system"), ("subprocess", "run"), ("builtins", "exec")])
)
def test_fuzz_payload_appended_to_any_data_is_found(
    value: object, protocol: int, target: tuple[str, str]
) -> None:
    # Given benign data followed, in the same stream, by a call to a denied global
    data = pickle.dumps(value, protocol=protocol) + corpus.call_global_p4(*target)
    report = scan_stream(io.BytesIO(data), "data.pkl", limits=LIMITS)
    # Then the payload is flagged
    assert RuleId.CODE_EXEC in {f.rule for f in report.findings}
    assert f"{target[0]}.{target[1]}" in corpus.globals_flagged(report)
