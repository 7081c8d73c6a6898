"""NumPy .npy/.npz: header parsed as a literal, object arrays walked as pickles, sizes checked."""

from __future__ import annotations

import numpy as np
import pytest
from modelshield.models import Format, RuleId
from modelshield.scanning.numpy_arrays import descr_itemsize, typestr_itemsize

from tests.corpus import pickle_family as corpus
from tests.corpus.pickle_family import globals_flagged, rules_of, scan_bytes


def test_object_array_payload_is_found() -> None:
    report = scan_bytes(corpus.npy_object_with_payload(), "a.npy")
    assert report.format == Format.NUMPY
    assert "posix.system" in globals_flagged(report)
    assert report.metadata["numpy_object_array"] is True


def test_npz_member_payload_is_found_and_located() -> None:
    report = scan_bytes(corpus.npz_with_payload(), "a.npz")
    assert report.format == Format.NUMPY_NPZ
    hit = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert hit.location.startswith("a.npz!evil.npy@")


@pytest.mark.parametrize("cut", [1, 8])
def test_data_size_mismatch_is_malformed(cut: int) -> None:
    data = corpus.npy_bytes(np.arange(10.0))
    assert RuleId.MALFORMED in rules_of(scan_bytes(data[:-cut], "a.npy"))
    assert RuleId.MALFORMED in rules_of(scan_bytes(data + b"\x00" * cut, "a.npy"))


@pytest.mark.parametrize(
    "header",
    [
        b"__import__('os').system('echo pwned')",
        b"{'descr': '<f8'}",
        b"{'descr': '<f8', 'fortran_order': 0, 'shape': 3}",
    ],
    ids=["code, not a literal", "missing keys", "shape not a tuple"],
)
def test_bad_headers_are_malformed_and_never_evaluated(header: bytes) -> None:
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    assert RuleId.MALFORMED in rules_of(scan_bytes(data, "a.npy"))


def test_header_longer_than_the_file_is_malformed() -> None:
    assert RuleId.MALFORMED in rules_of(scan_bytes(b"\x93NUMPY\x01\x00\xff\xff{}", "a.npy"))


@pytest.mark.parametrize(
    "dtype", ["<f8", "<i2", "|b1", "<U7", "|S5", "<c16", "<M8[ns]", "|V12", "<f2", "|u1"]
)
def test_itemsize_matches_numpy(dtype: str) -> None:
    assert typestr_itemsize(np.dtype(dtype).str) == (np.dtype(dtype).itemsize, False)


def test_structured_itemsize_matches_numpy() -> None:
    dt = np.dtype([("a", "<i4"), ("b", "<f8", (2, 3)), ("c", [("x", "|u1"), ("o", "|O")])])
    from numpy.lib import format as npformat

    size, has_objects = descr_itemsize(npformat.dtype_to_descr(dt))
    assert size == dt.itemsize and has_objects


def test_compressed_npz_of_zeros_is_not_mistaken_for_a_bomb() -> None:
    # Given np.savez_compressed of 4 MiB of zeros (compression ratio ~1000, over Limits.max_ratio)
    report = scan_bytes(corpus.npz_bytes(True, z=np.zeros(1 << 19)), "zeros.npz")
    # Then it is clean: small members may exceed the ratio
    assert not rules_of(report) & corpus.PROBLEM_RULES, report.findings


def test_npz_member_inflating_past_the_limits_is_incomplete() -> None:
    import io
    import zipfile

    # Given an npz member of 64 MiB of zeros whose header declares it (ratio ~1000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.npy", corpus.npy_bytes(np.zeros(8 << 20)))
    report = scan_bytes(buf.getvalue(), "bomb.npz")
    # Then it is not inflated past the budget: fail closed
    assert RuleId.SCAN_INCOMPLETE in rules_of(report)


def test_npz_with_duplicate_member_names_is_malformed_and_unsafe() -> None:
    import io
    import warnings
    import zipfile

    # Given an npz whose second 'w.npy' (an object-array payload) shadows the first
    data = corpus.npz_bytes(w=np.ones(3))
    evil = corpus.npz_with_payload()
    with zipfile.ZipFile(io.BytesIO(evil)) as zf:
        payload = zf.read("evil.npy")
    buf = io.BytesIO(data)
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "a") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("w.npy", payload)
    # When scanned
    report = scan_bytes(buf.getvalue(), "dup.npz")
    # Then both copies are scanned and the ambiguity is reported
    assert report.format == Format.NUMPY_NPZ
    assert {RuleId.MALFORMED, RuleId.ARCHIVE_UNSAFE, RuleId.CODE_EXEC} <= rules_of(report)
