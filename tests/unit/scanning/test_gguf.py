"""GGUF: chat templates analysed by tokens, every declared length checked, metadata for the policy rules."""

from __future__ import annotations

import struct

import pytest
from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.gguf import GGML_TYPE_SIZES

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, gguf_raw, gguf_string_value, problem_rules, rules_of, scan_bytes

STRING, UINT32, ARRAY = 8, 4, 9


def test_real_gguf_with_normal_chat_template_is_clean() -> None:
    # Given a GGUF written by gguf-py with a normal message-loop chat template and a license
    data = corpus.gguf_from_writer(corpus.BENIGN_CHAT_TEMPLATE)
    # When scanned
    report = scan_bytes(data, "model.gguf")
    # Then nothing is reported, and license/author reach the metadata the policy reads
    assert report.format == Format.GGUF
    assert not rules_of(report) & problem_rules(), report.findings
    assert report.metadata["license"] == "apache-2.0"
    assert report.metadata["author"] == "Example Org"
    assert report.metadata["gguf"]["chat_templates"] == ["tokenizer.chat_template"]
    assert report.metadata["gguf"]["tensor_count"] == 2


def test_ggml_type_table_matches_the_reference_library() -> None:
    import gguf

    reference = {int(t): sizes for t, sizes in gguf.GGML_QUANT_SIZES.items()}
    assert reference == GGML_TYPE_SIZES


def test_ssti_chat_template_is_code_execution() -> None:
    report = scan_bytes(corpus.gguf_from_writer(corpus.SSTI_TEMPLATE), "evil.gguf")
    hits = findings_of(report, RuleId.CODE_EXEC)
    assert {h.severity for h in hits} == {Severity.CRITICAL}
    assert any("'__subclasses__'" in h.message for h in hits)
    assert all(h.detail["key"] == "tokenizer.chat_template" for h in hits)


@pytest.mark.parametrize("name", sorted(corpus.OBFUSCATED_TEMPLATES))
def test_obfuscated_chat_templates_are_code_execution(name: str) -> None:
    report = scan_bytes(corpus.gguf_from_writer(corpus.OBFUSCATED_TEMPLATES[name]), "evil.gguf")
    assert findings_of(report, RuleId.CODE_EXEC), name


def test_named_chat_templates_are_analysed_too() -> None:
    kvs = [
        ("tokenizer.chat_template", STRING, gguf_string_value(corpus.BENIGN_CHAT_TEMPLATE)),
        ("tokenizer.chat_template.tool_use", STRING, gguf_string_value(corpus.SSTI_TEMPLATE)),
    ]
    report = scan_bytes(gguf_raw(kvs), "named.gguf")
    assert {h.detail["key"] for h in findings_of(report, RuleId.CODE_EXEC)} == {
        "tokenizer.chat_template.tool_use"
    }


# -- malformed headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (gguf_raw([], kv_count=1 << 40), "more than the file can hold"),
        (gguf_raw([], tensor_count=1 << 40), "more than the file can hold"),
        (gguf_raw([("k", STRING, struct.pack("<Q", 1 << 50))]), "beyond the end of the file"),
        (gguf_raw([("k", 99, b"\x00" * 8)]), "unknown value type 99"),
        (gguf_raw([("k", ARRAY, struct.pack("<IQ", UINT32, 1 << 40))]), "more than the file can hold"),
        (gguf_raw([("a", UINT32, b"\x01\x00\x00\x00"), ("a", UINT32, b"\x02\x00\x00\x00")]), "duplicate"),
        (gguf_raw([], version=7), "unsupported GGUF version 7"),
        (gguf_raw([("general.alignment", UINT32, struct.pack("<I", 3))]), "power of two"),
    ],
    ids=[
        "kv-count",
        "tensor-count",
        "string-length",
        "value-type",
        "array-count",
        "dup-key",
        "version",
        "align",
    ],
)
def test_malformed_headers_are_reported(data: bytes, expected: str) -> None:
    report = scan_bytes(data, "bad.gguf")
    assert any(expected in f.message for f in findings_of(report, RuleId.MALFORMED)), report.findings


def test_tensor_beyond_the_end_of_the_file_is_malformed() -> None:
    # Given a 4x8 f32 tensor (128 bytes) at offset 0 but only 16 bytes of data
    data = gguf_raw([], [("w", [8, 4], 0, 0)], data=b"\x00" * 16)
    report = scan_bytes(data, "short.gguf")
    assert any("beyond the end of the file" in f.message for f in findings_of(report, RuleId.MALFORMED))


def test_overlapping_and_unaligned_tensors_are_malformed() -> None:
    overlap = gguf_raw([], [("a", [32], 0, 0), ("b", [32], 0, 64)], data=b"\x00" * 256)
    unaligned = gguf_raw([], [("a", [8], 0, 4)], data=b"\x00" * 64)
    assert any("overlap" in f.message for f in findings_of(scan_bytes(overlap), RuleId.MALFORMED))
    assert any("not aligned" in f.message for f in findings_of(scan_bytes(unaligned), RuleId.MALFORMED))


def test_too_many_dimensions_and_unknown_types() -> None:
    dims = gguf_raw([], [("a", [1, 1, 1, 1, 1], 0, 0)], data=b"\x00" * 64)
    unknown = gguf_raw([], [("a", [8], 250, 0)], data=b"\x00" * 64)
    assert any("dimensions" in f.message for f in findings_of(scan_bytes(dims), RuleId.MALFORMED))
    hits = findings_of(scan_bytes(unknown), RuleId.MALFORMED)
    assert [h.severity for h in hits] == [Severity.MEDIUM]


def test_template_over_the_metadata_limit_is_incomplete() -> None:
    kvs = [("tokenizer.chat_template", STRING, gguf_string_value("{{ x }}" * 200))]
    report = scan_bytes(gguf_raw(kvs), "big.gguf", max_metadata_bytes=1000)
    assert any("metadata limit" in f.message for f in findings_of(report, RuleId.SCAN_INCOMPLETE))


def test_big_token_arrays_are_skipped_without_reading_each_item_into_memory() -> None:
    # Given 100k token strings (what real vocabularies look like)
    tokens = b"".join(gguf_string_value(f"tok{i}") for i in range(100_000))
    kvs = [("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 100_000) + tokens)]
    report = scan_bytes(gguf_raw(kvs), "vocab.gguf")
    assert not rules_of(report) & problem_rules()


def test_big_endian_gguf_is_parsed() -> None:
    value = b"mit"
    data = b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", len("general.license"))
    data += b"general.license" + struct.pack(">IQ", STRING, len(value)) + value
    report = scan_bytes(data, "be.gguf")
    assert report.metadata["license"] == "mit"
    assert not rules_of(report) & problem_rules()
