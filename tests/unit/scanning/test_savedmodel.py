"""SavedModel (`saved_model.pb`) built by hand with the protobuf writer: ops that run Python or use files."""

from __future__ import annotations

import pytest
from modelshield.models import Format, RuleId, Severity

from tests.corpus import formats as corpus
from tests.corpus.formats import (
    findings_of,
    pb_bytes,
    pb_int,
    problem_rules,
    rules_of,
    saved_model,
    scan_bytes,
    tf_node,
)


def test_tf2_style_saved_model_with_fed_checkpoint_paths_is_clean() -> None:
    # Given a graph plus a traced save function whose SaveV2/MergeV2Checkpoints paths come from an argument
    report = scan_bytes(corpus.saved_model_benign(), "saved_model.pb")
    # Then it is recognised and nothing is reported
    assert report.format == Format.TF_SAVEDMODEL
    assert report.metadata["savedmodel"] == {"tags": ["serve"]}
    assert not rules_of(report) & problem_rules(), report.findings


def test_tf1_saver_constant_fed_by_the_loader_is_clean() -> None:
    # Given a TF1 saver: SaveV2's prefix is the Const 'save/Const', which SaverDef names as the fed filename
    nodes = [
        tf_node("save/Const", "Const"),
        tf_node("save/SaveV2", "SaveV2", ["save/Const", "names", "s", "w"]),
    ]
    report = scan_bytes(saved_model(nodes, saver_filename="save/Const:0"), "saved_model.pb")
    assert not findings_of(report, RuleId.CODE_EXEC)


def test_pyfunc_is_code_execution() -> None:
    report = scan_bytes(corpus.saved_model_pyfunc(), "saved_model.pb")
    hit = findings_of(report, RuleId.CODE_EXEC)[0]
    assert hit.severity == Severity.CRITICAL
    assert hit.detail == {"op": "PyFunc", "node": "evil"}


@pytest.mark.parametrize("op", ["EagerPyFunc", "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst"])
def test_python_and_file_ops_are_code_execution(op: str) -> None:
    report = scan_bytes(saved_model([tf_node("x", "Placeholder"), tf_node("n", op, ["x"])]), "saved_model.pb")
    assert [f.detail["op"] for f in findings_of(report, RuleId.CODE_EXEC)] == [op]


def test_ops_inside_library_functions_are_found() -> None:
    fn = ("__inference_call_7", ["inp"], [tf_node("w", "WriteFile", ["inp", "inp"])])
    report = scan_bytes(saved_model([tf_node("x", "Placeholder")], functions=[fn]), "saved_model.pb")
    hit = findings_of(report, RuleId.CODE_EXEC)[0]
    assert "function '__inference_call_7'" in hit.message


def test_checkpoint_write_to_a_constant_path_is_code_execution() -> None:
    report = scan_bytes(corpus.saved_model_fixed_path_write(), "saved_model.pb")
    assert any("constant file path" in f.message for f in findings_of(report, RuleId.CODE_EXEC))


def test_print_into_a_file_is_code_execution() -> None:
    node = tf_node("p", "PrintV2", ["x"], attrs={"output_stream": b"file:///tmp/leak"})
    report = scan_bytes(saved_model([tf_node("x", "Placeholder"), node]), "saved_model.pb")
    assert any("prints into a file" in f.message for f in findings_of(report, RuleId.CODE_EXEC))


def test_print_to_stderr_is_fine() -> None:
    node = tf_node("p", "PrintV2", ["x"], attrs={"output_stream": b"stderr"})
    report = scan_bytes(saved_model([tf_node("x", "Placeholder"), node]), "saved_model.pb")
    assert not rules_of(report) & problem_rules()


def test_asset_escaping_the_assets_directory_is_unsafe() -> None:
    report = scan_bytes(
        saved_model([tf_node("x", "Placeholder")], assets=["../../etc/passwd"]), "saved_model.pb"
    )
    assert findings_of(report, RuleId.ARCHIVE_UNSAFE)


def test_truncated_saved_model_is_malformed() -> None:
    # Given a meta graph whose graph_def field claims 127 bytes that are not there
    meta = pb_bytes(1, pb_bytes(4, "serve")) + b"\x12\x7f"
    report = scan_bytes(pb_int(1, 1) + pb_bytes(2, meta), "saved_model.pb")
    # Then it is still a SavedModel, reported as malformed and not fully scanned
    assert report.format == Format.TF_SAVEDMODEL
    assert {RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE} <= rules_of(report)
