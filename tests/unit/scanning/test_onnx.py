"""ONNX at wire level: external-data escapes, custom domains, trigger switches; the protobuf reader itself."""

from __future__ import annotations

import io

import pytest
from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.onnx import external_location_problem
from modelshield.scanning.protobuf import LEN, VARINT, ProtoReader, WireError

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, pb_bytes, pb_int, problem_rules, rules_of, scan_bytes

# -- the protobuf reader -----------------------------------------------------------------------------------


def test_reader_yields_fields_with_offsets_and_nested_messages() -> None:
    # Given a message {1: 150, 2: "hi", 3: {1: 7}} built by hand
    msg = pb_int(1, 150) + pb_bytes(2, "hi") + pb_bytes(3, pb_int(1, 7))
    reader = ProtoReader(io.BytesIO(msg))
    # When its fields are read
    fields = list(reader.fields())
    # Then numbers, wire types, values and payload offsets match, and the nested message parses
    assert [(f.number, f.wire_type) for f in fields] == [(1, VARINT), (2, LEN), (3, LEN)]
    assert fields[0].value == 150
    assert reader.text_of(fields[1], 10) == "hi"
    inner = list(reader.fields(fields[2].offset, fields[2].end))
    assert inner[0].value == 7


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # varint missing
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 11-byte varint
        b"\x12\x05ab",  # length beyond the message
        b"\x0b",  # group start (wire type 3)
        b"\x00\x01",  # field number 0
        b"\x0d\x01\x02",  # truncated fixed32
    ],
)
def test_reader_rejects_malformed_wire_data(data: bytes) -> None:
    with pytest.raises(WireError):
        list(ProtoReader(io.BytesIO(data)).fields())


def test_reader_refuses_fields_over_the_limit_without_reading_them() -> None:
    msg = pb_bytes(1, b"x" * 1000)
    reader = ProtoReader(io.BytesIO(msg))
    field = next(iter(reader.fields()))
    with pytest.raises(WireError, match="over the 100-byte limit"):
        reader.bytes_of(field, 100)


def test_packed_varints_and_negative_int64() -> None:
    reader = ProtoReader(io.BytesIO(pb_bytes(1, b"\x01\x96\x01") + pb_int(2, -5)))
    packed, neg = list(reader.fields())
    assert reader.packed_varints(packed, 100) == [1, 150]
    assert neg.as_signed() == -5


# -- benign ------------------------------------------------------------------------------------------------


def test_model_built_with_onnx_helper_is_clean() -> None:
    report = scan_bytes(corpus.onnx_benign(), "model.onnx")
    assert report.format == Format.ONNX
    assert report.metadata["onnx"]["opsets"] == {"": 17}
    assert not rules_of(report) & problem_rules(), report.findings


def test_external_data_inside_the_model_directory_is_fine(tmp_path: object) -> None:
    # Given a real model saved by onnx with its weights in weights.bin beside it
    from pathlib import Path

    path = corpus.onnx_benign_with_external_dir(Path(str(tmp_path)))
    # When the model file is scanned
    report = scan_bytes(path.read_bytes(), "model.onnx")
    # Then the external location is recorded and nothing is reported
    assert report.metadata["onnx"]["external_data"] == ["weights.bin"]
    assert not rules_of(report) & problem_rules(), report.findings


def test_activation_and_attention_mask_comparisons_are_not_backdoors() -> None:
    report = scan_bytes(corpus.onnx_benign_guard_and_mask(), "guarded.onnx")
    assert not findings_of(report, RuleId.BACKDOOR), report.findings


# -- external data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "severity"),
    [
        ("../../etc/passwd", Severity.CRITICAL),
        ("/etc/passwd", Severity.CRITICAL),
        ("C:\\Windows\\win.ini", Severity.CRITICAL),
        ("sub/../../x", Severity.CRITICAL),
        ("*/_ORT_MEM_ADDR_/*", Severity.CRITICAL),
        ("http://evil.example/w.bin", Severity.HIGH),
        ("dir\\w.bin", Severity.HIGH),
    ],
)
def test_external_data_escaping_the_model_directory_is_unsafe(location: str, severity: Severity) -> None:
    report = scan_bytes(corpus.onnx_external_data(location), "ext.onnx")
    hits = findings_of(report, RuleId.ARCHIVE_UNSAFE)
    assert [h.severity for h in hits] == [severity]
    assert hits[0].detail["location"] == location


def test_plain_relative_locations_are_fine() -> None:
    assert external_location_problem("weights/w.bin")[0] == ""
    assert external_location_problem("model.onnx.data")[0] == ""


def test_external_offset_and_length_are_checked() -> None:
    report = scan_bytes(corpus.onnx_external_data("w.bin", offset="-4", length="12abc"), "ext.onnx")
    assert any("offset -4" in f.message for f in findings_of(report, RuleId.ARCHIVE_UNSAFE))
    assert any("not an integer" in f.message for f in findings_of(report, RuleId.MALFORMED))


def test_external_tensor_without_location_is_malformed() -> None:
    report = scan_bytes(
        corpus.onnx_external_data("x", offset="0").replace(b"location", b"locatioN"), "e.onnx"
    )
    assert any("names no location" in f.message for f in findings_of(report, RuleId.MALFORMED))


# -- custom domains ----------------------------------------------------------------------------------------


def test_custom_operator_domain_is_unknown_code() -> None:
    report = scan_bytes(corpus.onnx_custom_domain(), "custom.onnx")
    hit = findings_of(report, RuleId.CODE_UNKNOWN)[0]
    assert hit.detail == {"domain": "evil.ops", "op_type": "Backdoor"}


def test_python_op_domain_is_code_execution() -> None:
    report = scan_bytes(corpus.onnx_custom_domain("ai.onnx.contrib"), "pyop.onnx")
    assert findings_of(report, RuleId.CODE_EXEC)


def test_model_local_function_is_not_a_custom_op() -> None:
    # Given a model whose node calls a function defined in the model itself (made of standard ops)
    import onnx
    from onnx import helper

    model = onnx.load_from_string(corpus.onnx_custom_domain("local.fn"))
    fn = helper.make_function(
        "local.fn",
        "Backdoor",
        ["x"],
        ["y"],
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_opsetid("", 17)],
    )
    model.functions.append(fn)
    # When scanned
    report = scan_bytes(model.SerializeToString(), "fn.onnx")
    # Then nothing is unknown: the function body was checked instead
    assert not findings_of(report, RuleId.CODE_UNKNOWN)


def test_custom_op_inside_a_subgraph_is_found() -> None:
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Evil", ["logits"], ["b_out"], domain="evil.ops")],
        "then",
        [],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [1, 2])],
    )
    model = onnx.load_from_string(corpus.onnx_benign())
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    model.graph.node.append(helper.make_node("Constant", [], ["c"], value=cond))
    model.graph.node.append(helper.make_node("If", ["c"], ["Z"], then_branch=body, else_branch=body))
    report = scan_bytes(model.SerializeToString(), "sub.onnx")
    assert any(f.detail.get("op_type") == "Evil" for f in findings_of(report, RuleId.CODE_UNKNOWN))


# -- backdoor heuristics -----------------------------------------------------------------------------------


def test_where_switch_on_input_equal_constant_is_a_backdoor() -> None:
    report = scan_bytes(corpus.onnx_where_backdoor(), "where.onnx")
    hits = findings_of(report, RuleId.BACKDOOR)
    assert [h.detail["node"] for h in hits] == ["switch"]
    assert hits[0].detail["hops_to_output"] == 0


def test_if_switch_on_input_threshold_is_a_backdoor() -> None:
    report = scan_bytes(corpus.onnx_if_backdoor(), "if.onnx")
    assert [h.detail["op_type"] for h in findings_of(report, RuleId.BACKDOOR)] == ["If"]


def test_switch_far_from_the_output_is_not_reported() -> None:
    # Given the Where backdoor followed by four more layers before the output
    import onnx
    from onnx import helper

    model = onnx.load_from_string(corpus.onnx_where_backdoor())
    switch = next(n for n in model.graph.node if n.name == "switch")
    switch.output[0] = "s0"
    for i in range(4):
        model.graph.node.append(helper.make_node("Relu", [f"s{i}"], [f"s{i + 1}" if i < 3 else "Y"]))
    # When scanned
    report = scan_bytes(model.SerializeToString(), "deep.onnx")
    # Then the heuristic (switch within 3 nodes of the output) stays quiet
    assert not findings_of(report, RuleId.BACKDOOR)


def test_a_loss_that_drops_ignored_targets_from_a_sum_is_not_a_backdoor() -> None:
    # Given Where(target == ignore_index, 0, weight) whose result is only summed (onnx's expanded NLL loss)
    report = scan_bytes(corpus.onnx_benign_ignore_index_loss(), "loss.onnx")
    # Then the zero fill only removes terms from the aggregate: no finding
    assert not findings_of(report, RuleId.BACKDOOR), report.findings


def test_a_switch_on_the_rank_of_a_fixed_shape_input_is_not_a_backdoor() -> None:
    # Given If(Size(size) == 4) where `size` is declared with fixed dims [4] (onnx's expanded AffineGrid)
    report = scan_bytes(corpus.onnx_rank_dispatch([4]), "grid.onnx")
    # Then the condition is a constant the caller cannot vary: no finding
    assert not findings_of(report, RuleId.BACKDOOR), report.findings


def test_a_switch_on_the_length_of_a_symbolic_input_is_still_a_backdoor() -> None:
    # Given the same If, but `size` has a symbolic dimension: the caller picks its length (the trigger)
    report = scan_bytes(corpus.onnx_rank_dispatch(["n"]), "grid.onnx")
    # Then it is reported like any trigger switch
    assert [h.detail["node"] for h in findings_of(report, RuleId.BACKDOOR)] == ["dispatch"]


@pytest.mark.parametrize(
    ("fill", "reduce"),
    [(0.0, False), (1000.0, True)],
    ids=["zero fill at the output", "non-zero fill summed"],
)
def test_single_value_fills_that_can_steer_the_output_are_still_backdoors(fill: float, reduce: bool) -> None:
    # Given Where(input == trigger, fill, logits) that either is the output or is summed with a non-zero fill
    report = scan_bytes(corpus.onnx_zero_fill_backdoor(fill=fill, reduce=reduce), "fill.onnx")
    # Then the masked-reduction exemption does not apply
    assert [h.detail["node"] for h in findings_of(report, RuleId.BACKDOOR)] == ["switch"]


# -- malformed ---------------------------------------------------------------------------------------------


def test_truncated_model_is_malformed() -> None:
    data = corpus.onnx_benign()
    report = scan_bytes(data[: len(data) - 7], "cut.onnx")
    assert report.format == Format.ONNX
    assert {RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE} <= rules_of(report)


def test_protobuf_without_a_graph_is_not_accepted_as_anything() -> None:
    # Given ir_version and a producer name but no graph (not a model any runtime loads)
    report = scan_bytes(pb_int(1, 8) + pb_bytes(2, "pytorch"), "nograph.onnx")
    # Then no scanner claims it (not even text: it holds control bytes), so it fails closed
    assert report.format == Format.UNKNOWN
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)
