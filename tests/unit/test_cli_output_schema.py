"""One output schema for scan results (schemas/scan-result.schema.json), summaries, -o FILE, symlinks.

`scan --format json` and `verdict --format json` print the same result object: the tests validate both
against the schema in the repository, and check that what the schema promises (severity names, a summary
naming blocked and skipped files) is what the commands print.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from modelshield.cli import commands_scan, main
from modelshield.cli.commands_stack import print_scan_record
from modelshield.cli.report import record_json
from modelshield.models import ScanRecord
from modelshield.scanning.pickles.report import decompile_excerpt
from modelshield.store.dynamo import from_item, to_item

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "scan-result.schema.json").read_text())
# PROTO 2, GLOBAL os.system, BINUNICODE "echo pwned", TUPLE1, REDUCE, STOP (never loaded)
EVIL_PICKLE = b"\x80\x02cos\nsystem\nX\n\x00\x00\x00echo pwned\x85R."
# A denied import, then STACK_GLOBAL over two integers: fickling's decompiler writes
# "Warning: malformed pickle file. STACK_GLOBAL called with invalid types" to stdout on this one.
MALFORMED_EVIL_PICKLE = b"\x80\x04cos\nsystem\nK\x01K\x02\x93X\x02\x00\x00\x00hi\x85R."


def validate(document: object, definition: str | None = None) -> None:
    schema = SCHEMA if definition is None else {**SCHEMA, "$ref": f"#/$defs/{definition}", "oneOf": None}
    if definition is not None:
        schema = {k: v for k, v in schema.items() if k != "oneOf"}
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "good.pkl").write_bytes(pickle.dumps({"weights": [0.1, 0.2]}, protocol=2))
    (root / "evil.pkl").write_bytes(EVIL_PICKLE)
    return root


def test_the_schema_itself_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_scan_json_follows_the_schema_with_severity_names_and_a_summary_naming_blocked_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a directory with a benign and a malicious pickle
    root = model_dir(tmp_path / "models")
    # When it is scanned as JSON
    code, out, _ = run(capsys, "scan", str(root), "--format", "json")
    document = json.loads(out)
    # Then the report validates, severities are names, and the summary names the blocked file
    validate(document)
    assert code == 1
    severities = {f["severity"] for r in document["results"] for f in r["findings"]}
    assert severities and severities <= {"INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
    assert document["summary"]["verdicts"]["BLOCKED"] == 1
    assert document["summary"]["verdicts"]["ALLOWED"] == 1
    assert document["summary"]["blocked"] == [str(root / "evil.pkl")]
    # And the DESIGN's contract keys are still there
    first = document["results"][0]
    assert {"path", "format", "verdict", "sha256", "findings"} <= set(first)
    assert all({"rule", "severity", "message", "location"} <= set(f) for f in first["findings"])


def test_a_stored_scan_record_prints_as_the_same_result_shape_and_table_lines(tmp_path: Path) -> None:
    # Given a local scan of a malicious pickle, recorded as the pipeline records a scan
    path = tmp_path / "evil.pkl"
    path.write_bytes(EVIL_PICKLE)
    (result,) = commands_scan.scan_files(
        [str(path)], group=commands_scan.content_safety_group(), groups=[], metadata=_metadata()
    )
    record = ScanRecord(
        artifact_id="ingest/models/evil.pkl",
        scan_ref="2026-12-02T00:00:00#v1#s1",
        scan_id="s1",
        bucket="ingest",
        key="models/evil.pkl",
        version_id="v1",
        sha256=result.report.sha256,
        size=result.report.size,
        format=result.report.format,
        verdict=result.evaluation.verdict,
        group=result.evaluation.group,
        group_version=result.evaluation.group_version,
        rules=result.evaluation.rules,
        findings=result.report.findings,
        scanner_version="test",
        scanned_at=datetime(2026, 12, 2, tzinfo=UTC),
        message=result.evaluation.message,
    )
    # When it goes through DynamoDB's item form and back, and is printed as `verdict --format json` does
    stored = ScanRecord.model_validate(from_item(to_item(record)))
    as_verdict = record_json(stored)
    # Then it validates as a result, with the same findings and rules as the local scan's JSON
    validate(as_verdict, "result")
    as_scan = commands_scan.result_json(result)
    assert as_verdict["findings"] == as_scan["findings"]
    keys = ("rule", "status", "blocking", "severity", "message")
    assert [{k: r[k] for k in keys} for r in as_verdict["rules"]] == as_scan["rules"]
    assert as_verdict["path"] == "s3://ingest/models/evil.pkl"
    # And the two tables print identical rule lines (skipped rules read the same)
    scan_table, verdict_table = io.StringIO(), io.StringIO()
    with redirect_stdout(scan_table):
        commands_scan.print_table([result])
    with redirect_stdout(verdict_table):
        print_scan_record(stored)
    lines = scan_table.getvalue().splitlines()
    rule_lines = [ln for ln in lines if ln.startswith("  ") and "MS-" in ln and ln[:4] != "    "]
    assert rule_lines and all(line in verdict_table.getvalue().splitlines() for line in rule_lines)
    assert any(line.startswith("  SKIPPED") and line.endswith("disabled") for line in rule_lines)


def test_records_stored_with_numeric_severities_still_read() -> None:
    # Given an item written before severities were stored as names
    item = {"rule": "MS-CODE-EXEC", "severity": 50, "message": "old"}
    # When it is read, Then the severity is CRITICAL and prints as the name
    from modelshield.models import Finding

    finding = Finding.model_validate(item)
    assert finding.model_dump(mode="json")["severity"] == "CRITICAL"


def test_fickling_warnings_never_reach_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    # Given a malformed pickle that makes fickling's decompiler print a warning to stdout
    # When the excerpt is decompiled
    decompile_excerpt(MALFORMED_EVIL_PICKLE)
    # Then nothing was written to the process's stdout or stderr
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_scan_json_of_a_malformed_pickle_parses(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd.pkl"
    path.write_bytes(MALFORMED_EVIL_PICKLE)
    code = main(["scan", str(path), "--format", "json"])
    out, _ = capfd.readouterr()
    validate(json.loads(out))
    assert code == 1


def test_dash_o_writes_the_report_to_a_file_and_stdout_stays_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = model_dir(tmp_path / "models")
    report = tmp_path / "report.json"
    code, out, err = run(capsys, "scan", str(root), "--format", "json", "-o", str(report))
    assert code == 1 and out == ""
    validate(json.loads(report.read_text()))
    assert f"report written to {report}" in err and "not released: " in err


def test_the_table_ends_with_a_summary_naming_blocked_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = model_dir(tmp_path / "models")
    _, out, _ = run(capsys, "scan", str(root))
    last = out.strip().splitlines()[-1]
    assert last == f"2 files scanned: 1 allowed, 1 blocked; not released: {root / 'evil.pkl'}"


def test_explain_without_a_rule_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "--format", "json")
    rules = {r["rule"] for r in json.loads(out)["rules"]}
    assert code == 0 and {"MS-CODE-EXEC", "MS-LICENSE", "MS-SCAN-INCOMPLETE"} <= rules
    code, out, _ = run(capsys, "explain")
    assert code == 0 and "MS-CODE-EXEC" in out and "modelshield explain RULE" in out


# -- symlinks: Hugging Face cache folders ----------------------------------------------------------
def hf_cache(tmp_path: Path) -> Path:
    """models--org--name/{blobs/<sha>, snapshots/<rev>/<file> -> ../../blobs/<sha>}, plus an escaping link."""
    repo = tmp_path / "hub" / "models--org--tiny"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (blobs / "1111").write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    (blobs / "2222").write_bytes(EVIL_PICKLE)
    os.symlink("../../blobs/1111", snapshot / "model.pkl")
    os.symlink("../../blobs/2222", snapshot / "extra.pkl")
    secret = tmp_path / "outside.pkl"
    secret.write_bytes(pickle.dumps([1], protocol=2))
    os.symlink(secret, snapshot / "escape.pkl")
    os.symlink("../../blobs/missing", snapshot / "dangling.pkl")
    return repo


def test_follow_symlinks_scans_links_inside_the_tree_and_names_those_that_leave_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a Hugging Face cache repo folder
    repo = hf_cache(tmp_path)
    # When it is scanned with --follow-symlinks
    code, out, _ = run(capsys, "scan", str(repo), "--follow-symlinks", "--format", "json")
    document = json.loads(out)
    validate(document)
    by_path = {Path(r["path"]).relative_to(repo).as_posix(): r for r in document["results"]}
    # Then links into blobs/ are scanned under their own names
    assert by_path["snapshots/abc123/model.pkl"]["verdict"] == "ALLOWED"
    assert by_path["snapshots/abc123/extra.pkl"]["verdict"] == "BLOCKED"
    # And the link leaving the tree and the broken one are not read, are ERROR, and are named as skipped
    assert by_path["snapshots/abc123/escape.pkl"]["verdict"] == "ERROR"
    assert "leaves the scanned tree" in by_path["snapshots/abc123/escape.pkl"]["findings"][0]["message"]
    assert by_path["snapshots/abc123/escape.pkl"]["sha256"] is None
    skipped = {
        Path(s["path"]).relative_to(repo).as_posix(): s["reason"] for s in document["summary"]["skipped"]
    }
    assert set(skipped) == {"snapshots/abc123/escape.pkl", "snapshots/abc123/dangling.pkl"}
    assert "broken symlink" in skipped["snapshots/abc123/dangling.pkl"]
    assert code == 1


def test_without_follow_symlinks_every_link_is_named_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hf_cache(tmp_path)
    _, out, _ = run(capsys, "scan", str(repo))
    last = out.strip().splitlines()[-1]
    for name in ("model.pkl", "extra.pkl", "escape.pkl", "dangling.pkl"):
        assert f"snapshots/abc123/{name} (symlink not followed" in last


def test_a_directory_linked_twice_is_walked_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a directory reachable directly and through a link, with a link looping back to the root
    root = tmp_path / "m"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.pkl").write_bytes(pickle.dumps([1], protocol=2))
    os.symlink("real", root / "again")
    os.symlink("..", root / "real" / "up")
    # When it is scanned following links
    _, out, _ = run(capsys, "scan", str(root), "--follow-symlinks", "--format", "json")
    document = json.loads(out)
    # Then the file is scanned once, under its real path, and the second way in and the loop are named
    results = {Path(r["path"]).relative_to(root).as_posix(): r for r in document["results"]}
    assert sorted(results) == ["again", "real/a.pkl", "real/up"]
    assert results["real/a.pkl"]["verdict"] == "ALLOWED"
    assert {Path(s["path"]).relative_to(root).as_posix() for s in document["summary"]["skipped"]} == {
        "again",
        "real/up",
    }


def _metadata():
    from modelshield.policy.metadata import ArtifactMetadata

    return ArtifactMetadata()
