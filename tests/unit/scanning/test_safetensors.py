"""safetensors: the header checked like the reference loader does (a little stricter); tensor bytes unread."""

from __future__ import annotations

import struct

import pytest
from modelshield.models import Format, RuleId, Severity

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, problem_rules, rules_of, safetensors_raw, scan_bytes


def _tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_file_saved_by_safetensors_is_clean_and_reports_its_license() -> None:
    report = scan_bytes(corpus.safetensors_benign(), "model.safetensors")
    assert report.format == Format.SAFETENSORS
    assert not rules_of(report) & problem_rules(), report.findings
    assert report.metadata["license"] == "mit"
    assert report.metadata["safetensors"] == {"tensors": 2, "data_bytes": 24 + 24}


def test_sub_byte_dtypes_and_empty_tensors_are_accepted() -> None:
    header = {
        "a": _tensor("F4", [2, 4], 0, 4),
        "b": _tensor("F32", [0, 3], 4, 4),
        "c": _tensor("BOOL", [2], 4, 6),
    }
    report = scan_bytes(safetensors_raw(header, b"\x00" * 6), "ok.safetensors")
    assert not rules_of(report) & problem_rules(), report.findings


@pytest.mark.parametrize(
    ("header", "data", "expected"),
    [
        ({"a": _tensor("F32", [2], 0, 8), "b": _tensor("F32", [2], 4, 12)}, 12, "overlaps"),
        ({"a": _tensor("F32", [2], 0, 8), "b": _tensor("F32", [2], 16, 24)}, 24, "unaccounted"),
        ({"a": _tensor("F32", [2], 0, 8)}, 100, "trailing bytes"),
        ({"a": _tensor("F32", [2], 0, 8)}, 4, "has only 4"),
        ({"a": _tensor("F32", [3], 0, 8)}, 8, "needs 12 bytes"),
        ({"a": _tensor("F4", [3], 0, 2)}, 2, "whole bytes"),
        ({"a": _tensor("Q4", [2], 0, 8)}, 8, "unknown dtype"),
        ({"a": _tensor("F32", [-2], 0, 8)}, 8, "non-negative"),
        ({"a": _tensor("F32", [2], 8, 0)}, 8, "begin <= end"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, 8, "unexpected keys"),
        ({"__metadata__": {"license": 3}}, 0, "strings to strings"),
    ],
    ids=[
        "overlap",
        "gap",
        "trailing",
        "past-end",
        "size",
        "subbyte",
        "dtype",
        "shape",
        "offsets",
        "keys",
        "meta",
    ],
)
def test_header_layout_errors_are_malformed(header: dict[str, object], data: int, expected: str) -> None:
    report = scan_bytes(safetensors_raw(header, b"\x00" * data), "bad.safetensors")
    assert any(expected in f.message for f in findings_of(report, RuleId.MALFORMED)), report.findings


def test_header_length_beyond_the_limit_is_not_read() -> None:
    # Given a header length of 1 TiB (a loader would try to allocate it)
    data = safetensors_raw("{}", declared=1 << 40)
    report = scan_bytes(data, "huge.safetensors")
    hit = findings_of(report, RuleId.MALFORMED)[0]
    assert hit.severity == Severity.HIGH and "over the" in hit.message
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_header_length_beyond_the_file_is_malformed() -> None:
    report = scan_bytes(safetensors_raw("{}", declared=5000), "short.safetensors")
    assert any("only" in f.message for f in findings_of(report, RuleId.MALFORMED))


@pytest.mark.parametrize(
    "raw",
    ['{"a": ', '{"a": 1, "a": 2}', '{"\xff": 1}', '{"a": [' * 100_000 + "]" * 100_000 + "}"],
    ids=["truncated", "duplicate", "not-utf8", "deep"],
)
def test_invalid_json_headers_are_malformed(raw: str) -> None:
    encoded = raw.encode("latin-1") if "\xff" in raw else raw.encode()
    report = scan_bytes(struct.pack("<Q", len(encoded)) + encoded, "json.safetensors")
    assert report.format == Format.SAFETENSORS
    assert findings_of(report, RuleId.MALFORMED)


def test_header_that_is_not_an_object_is_not_safetensors() -> None:
    report = scan_bytes(safetensors_raw("[1, 2]"), "list.safetensors")
    assert report.format != Format.SAFETENSORS


def test_binary_file_with_a_brace_at_byte_8_is_not_claimed() -> None:
    # Given a pickle whose byte 8 happens to be '{' (found by the pickle fuzz tests)
    import pickle

    data = pickle.dumps([-33793, None], protocol=2)
    assert data[8:9] == b"{"
    # Then the safetensors sniffer leaves it to the pickle scanner
    report = scan_bytes(data, "list.pkl")
    assert report.format == Format.PICKLE
