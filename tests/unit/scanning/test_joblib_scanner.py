"""joblib: inline array bytes skipped (not 'data after STOP'), object arrays walked, old containers."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from modelshield.models import Format, RuleId

from tests.corpus import pickle_family as corpus
from tests.corpus.pickle_family import PROBLEM_RULES, globals_flagged, rules_of, scan_bytes


def test_payload_next_to_arrays_is_found() -> None:
    report = scan_bytes(corpus.joblib_with_payload(), "model.joblib")
    assert report.format == Format.JOBLIB
    assert "posix.system" in globals_flagged(report)


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 3), ("bz2", 3)])
def test_arrays_of_many_shapes_and_dtypes_are_skipped_exactly(compress) -> None:
    # Given arrays of many dtypes and ranks (incl. >3-d shapes, structured and object dtypes)
    obj = {
        "f": np.ones((2, 3, 4, 5)),
        "i": np.arange(7, dtype="<i2"),
        "u": np.array(["a", "bcd"]),
        "s": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        "o": np.array([1, "x", None], dtype=object),
        "scalar": np.float64(2.0),
        "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(np.ones((3, 2))),
    }
    report = scan_bytes(corpus.joblib_dump(obj, compress), "m.joblib")
    # Then everything is understood and nothing is flagged
    assert "joblib" in report.metadata["formats"]
    assert not rules_of(report) & PROBLEM_RULES, report.findings


def test_payload_inside_an_object_array_is_found() -> None:
    arr = np.empty(2, dtype=object)
    arr[1] = corpus.NamesOsSystem()
    report = scan_bytes(corpus.joblib_dump({"a": np.ones(3), "o": arr}), "m.joblib")
    assert "posix.system" in globals_flagged(report)


def test_array_declared_beyond_the_end_is_incomplete() -> None:
    data = corpus.joblib_dump({"w": np.ones(1000)})
    report = scan_bytes(data[: len(data) // 2], "cut.joblib")
    assert RuleId.SCAN_INCOMPLETE in rules_of(report)


def test_old_zfile_container_is_inflated_and_scanned() -> None:
    # Given an old joblib 'ZF' file wrapping a malicious pickle
    inner = corpus.global_os_system()
    data = b"ZF" + hex(len(inner)).encode().ljust(19) + zlib.compress(inner)
    report = scan_bytes(data, "old.pkl")
    assert report.format == Format.JOBLIB
    hit = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert hit.location.startswith("old.pkl!<joblib-zfile>")


def test_zfile_lying_about_its_length_is_malformed() -> None:
    inner = pickle_bytes = corpus.plain_data_pickles()["protocol4"]
    data = b"ZF" + hex(len(inner) + 5).encode().ljust(19) + zlib.compress(pickle_bytes)
    assert RuleId.MALFORMED in rules_of(scan_bytes(data, "old.pkl"))


def test_lz4_container_fails_closed() -> None:
    report = scan_bytes(b"\x04\x22\x4d\x18" + b"\x00" * 32, "m.joblib.lz4")
    assert rules_of(report) == {RuleId.SCAN_INCOMPLETE}


def test_joblib_pickle_polyglot_is_found() -> None:
    # Given a wrapper whose 'array' bytes are os.system opcodes for a plain pickle.load (no padding byte)
    report = scan_bytes(corpus.joblib_polyglot(), "poly.joblib")
    # Then joblib's reading is clean, but the plain-pickle reading is flagged
    hit = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert hit.detail["global"] == "os.system" and hit.detail["reading"] == "pickle.load"


def test_random_array_bytes_read_as_a_pickle_stay_quiet() -> None:
    # Given compressed joblib files (no padding) of random numeric arrays
    rng = np.random.default_rng(1)
    for i in range(5):
        data = corpus.joblib_dump(
            {"w": rng.random(5000), "i": rng.integers(0, 255, 5000, dtype="u1")}, ("gzip", 1)
        )
        report = scan_bytes(data, f"r{i}.joblib")
        # Then the plain-pickle reading of their array bytes reports nothing
        assert not rules_of(report) & PROBLEM_RULES, report.findings
