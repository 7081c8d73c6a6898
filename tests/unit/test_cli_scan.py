"""`modelshield scan`: exit codes, table/JSON/SARIF output, directory walks, groups, metadata and signatures.

Fixtures are built in the test: benign pickles with pickle.dumps, the malicious one as raw opcodes that
would call os.system("echo pwned") if loaded (it never is).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import model_signing.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from modelshield.cli import commands_scan, main

# PROTO 2, GLOBAL os.system, BINUNICODE "echo pwned", TUPLE1, REDUCE, STOP
EVIL_PICKLE = b"\x80\x02cos\nsystem\nX\n\x00\x00\x00echo pwned\x85R."
GROUPS_YAML = """
groups:
  - name: Production
    sources: [{type: s3, bucket: "*", prefix: prod/}]
    rules:
      MS-LICENSE: {settings: {approved_licenses: [mit]}}
      MS-FORMAT-SAFE: {settings: {pickle_based: deny}}
  - name: Research
    sources: [{type: s3, bucket: "*", prefix: research/}]
    rules:
      MS-LICENSE: {blocking: false}
  - name: default
"""


def benign(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weights": [0.1, 0.2], "name": "tiny"}, protocol=2))
    return path


def evil(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(EVIL_PICKLE)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def scan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code, out, _ = run(capsys, "scan", "--format", "json", *argv)
    return code, json.loads(out)["results"]


# -- exit codes and output shapes ------------------------------------------------------------------------
def test_a_benign_file_is_allowed_with_exit_0_and_a_rule_by_rule_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = benign(tmp_path / "model.pkl")
    code, out, err = run(capsys, "scan", str(path))
    assert code == 0 and err == ""
    assert f"Scan of {path} using content-safety group (v1)" in out
    assert "  PASS    MS-CODE-EXEC" in out and "blocking" in out
    assert "  SKIPPED MS-LICENSE" in out
    assert "verdict: ALLOWED" in out


def test_a_malicious_pickle_is_blocked_with_exit_1_and_its_finding_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = evil(tmp_path / "evil.pkl")
    code, results = scan_json(capsys, str(path))
    assert code == 1
    (result,) = results
    assert set(result) >= {"path", "format", "verdict", "sha256", "size", "group", "findings", "rules"}
    assert (result["path"], result["format"], result["verdict"], result["group"]) == (
        str(path),
        "pickle",
        "BLOCKED",
        "content-safety",
    )
    assert result["size"] == len(EVIL_PICKLE) and len(result["sha256"]) == 64
    exec_findings = [f for f in result["findings"] if f["rule"] == "MS-CODE-EXEC"]
    assert exec_findings and exec_findings[0]["severity"] == "CRITICAL"
    assert "os.system" in exec_findings[0]["message"]
    assert exec_findings[0]["location"].startswith(str(path))
    rules = {r["rule"]: r for r in result["rules"]}
    assert rules["MS-CODE-EXEC"] == {
        "rule": "MS-CODE-EXEC",
        "status": "FAIL",
        "blocking": True,
        "severity": "CRITICAL",
        "message": exec_findings[0]["message"],
    }
    assert set(rules["MS-LICENSE"]) == {"rule", "status", "blocking", "severity", "message"}


def test_a_payload_inside_an_archive_is_located_as_archive_bang_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("weights/ok.pkl", pickle.dumps([1, 2], protocol=2))
        zf.writestr("weights/data.pkl", EVIL_PICKLE)
    code, (result,) = scan_json(capsys, str(archive))
    assert code == 1 and result["verdict"] == "BLOCKED"
    locations = [f["location"] for f in result["findings"] if f["rule"] == "MS-CODE-EXEC"]
    assert locations and all(loc.startswith(f"{archive}!weights/data.pkl") for loc in locations)


def test_sarif_output_is_a_sarif_log_with_the_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = evil(tmp_path / "evil.pkl")
    code, out, _ = run(capsys, "scan", "--format", "sarif", str(path))
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    results = log["runs"][0]["results"]
    assert any(r["ruleId"] == "MS-CODE-EXEC" and r["level"] == "error" for r in results)


def test_a_missing_path_is_one_clear_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benign(tmp_path / "ok.pkl")
    code, out, err = run(capsys, "scan", str(tmp_path / "ok.pkl"), str(tmp_path / "missing.pkl"))
    assert code == 2 and out == ""
    assert err == f"modelshield: error: {tmp_path / 'missing.pkl'}: no such file or directory\n"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["scan"], "give at least one PATH"),
        (["scan", "x.pkl", "--metadata", "license"], "expected KEY=VALUE"),
        (["scan", "x.pkl", "--group", "Nope"], "no such group in the default groups"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    benign(tmp_path / "x.pkl")
    code, _, err = run(capsys, *argv)
    assert code == 2 and problem in err


def test_an_unreadable_file_is_reported_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelshield import scanning

    def unreadable(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    benign(tmp_path / "locked.pkl")
    monkeypatch.setattr(scanning, "scan_path", unreadable)
    code, out, err = run(capsys, "scan", "--format", "json", str(tmp_path / "locked.pkl"))
    assert code == 2
    assert json.loads(out)["results"][0]["verdict"] == "ERROR"
    assert "locked.pkl: cannot read: Permission denied" in err


# -- directories -------------------------------------------------------------------------------------------
def test_a_directory_is_walked_recursively_and_links_and_special_files_are_reported_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model directory with a nested file, a symlink to a file outside, a linked directory and a FIFO
    root = tmp_path / "models"
    benign(root / "a.pkl")
    benign(root / "nested" / "deeper" / "b.pkl")
    outside = evil(tmp_path / "outside" / "evil.pkl")
    os.symlink(outside, root / "link.pkl")
    os.symlink(outside.parent, root / "linked-dir")
    os.mkfifo(root / "pipe")
    # When the directory is scanned
    code, results = scan_json(capsys, str(root))
    by_path = {Path(r["path"]).relative_to(root).as_posix(): r for r in results}
    # Then every entry is reported, nothing is followed, and the links make it fail closed
    assert sorted(by_path) == ["a.pkl", "link.pkl", "linked-dir", "nested/deeper/b.pkl", "pipe"]
    assert by_path["a.pkl"]["verdict"] == by_path["nested/deeper/b.pkl"]["verdict"] == "ALLOWED"
    for name in ("link.pkl", "linked-dir"):
        assert by_path[name]["verdict"] == "ERROR"
        assert "symlink not followed" in by_path[name]["findings"][0]["message"]
    assert "not a regular file" in by_path["pipe"]["findings"][0]["message"]
    assert code == 1


def test_a_symlink_named_on_the_command_line_is_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = evil(tmp_path / "evil.pkl")
    os.symlink(target, tmp_path / "alias.pkl")
    code, (result,) = scan_json(capsys, str(tmp_path / "alias.pkl"))
    assert code == 1 and result["verdict"] == "BLOCKED"


def test_an_empty_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "scan", str(tmp_path / "empty"))
    assert code == 2 and "no files to scan" in err


# -- groups and metadata -----------------------------------------------------------------------------------
def test_a_named_group_applies_its_policy_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS_YAML)
    path = benign(tmp_path / "model.pkl")
    # Production refuses pickle even with an approved license
    code, (result,) = scan_json(
        capsys, str(path), "--groups", str(groups), "--group", "Production", "--metadata", "license=MIT"
    )
    failed = {r["rule"] for r in result["rules"] if r["status"] == "FAIL"}
    assert (code, result["verdict"], result["group"], failed) == (
        1,
        "BLOCKED",
        "Production",
        {"MS-FORMAT-SAFE"},
    )
    # Research only warns about the missing license: exit 0
    code, (result,) = scan_json(capsys, str(path), "--groups", str(groups), "--group", "Research")
    assert (code, result["verdict"]) == (0, "ALLOWED_WITH_WARNINGS")


def test_without_group_each_file_resolves_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("groups.yaml").write_text(GROUPS_YAML)
    benign(Path("prod/m.pkl"))
    benign(Path("research/m.pkl"))
    benign(Path("other/m.pkl"))
    _, results = scan_json(capsys, "prod", "research", "other", "--groups", "groups.yaml")
    assert {r["path"]: r["group"] for r in results} == {
        os.path.join("prod", "m.pkl"): "Production",
        os.path.join("research", "m.pkl"): "Research",
        os.path.join("other", "m.pkl"): "default",
    }


def test_seeded_groups_can_be_named_without_a_groups_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = benign(tmp_path / "model.pkl")
    code, (result,) = scan_json(
        capsys, str(path), "--group", "HuggingFace-Research", "--metadata", "source_type=huggingface"
    )
    assert (code, result["group"], result["verdict"]) == (0, "HuggingFace-Research", "ALLOWED_WITH_WARNINGS")


def test_a_model_card_next_to_the_file_supplies_the_license(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text(
        "groups:\n  - name: licensed\n    rules: {MS-LICENSE: {settings: {approved_licenses: [mit]}}}\n"
    )
    path = benign(tmp_path / "repo" / "model.pkl")
    (path.parent / "README.md").write_text("---\nlicense: mit\n---\n# A model\n")
    code, (result,) = scan_json(capsys, str(path), "--groups", str(groups))
    assert (code, result["verdict"]) == (0, "ALLOWED")
    code, (result,) = scan_json(capsys, str(path), "--groups", str(groups), "--metadata", "license=gpl-3.0")
    assert (code, result["verdict"]) == (1, "BLOCKED")


def test_a_detached_signature_next_to_the_file_verifies_the_author(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a publisher key trusted by the group, and a model signed with it (model.pkl.sig beside it)
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "publisher.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "publisher.pub").write_bytes(public)
    groups = tmp_path / "groups.yaml"
    groups.write_text(
        "groups:\n  - name: signed\n    rules:\n      MS-AUTHOR-VERIFIED:\n"
        f"        settings: {{trusted_public_keys: ['{tmp_path / 'publisher.pub'}']}}\n"
    )
    model = benign(tmp_path / "dist" / "model.pkl")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model, model.with_name("model.pkl.sig")
    )
    # Then the signed model is allowed, and the same file tampered with afterwards is blocked
    code, results = scan_json(capsys, str(model), "--groups", str(groups))
    assert (code, results[0]["verdict"]) == (0, "ALLOWED")
    model.write_bytes(pickle.dumps({"weights": [9.9]}, protocol=2))
    code, results = scan_json(capsys, str(model), "--groups", str(groups))
    author = next(r for r in results[0]["rules"] if r["rule"] == "MS-AUTHOR-VERIFIED")
    assert (code, results[0]["verdict"], author["status"]) == (1, "BLOCKED", "FAIL")


def test_scan_files_is_usable_as_a_library(tmp_path: Path) -> None:
    results = commands_scan.scan_files(
        [str(benign(tmp_path / "m.pkl"))],
        group=None,
        groups=[],
        metadata=commands_scan.metadata_from_pairs([]),
    )
    # No group and no groups: resolution falls back to the built-in policy under the name default
    assert [(r.evaluation.group, r.evaluation.verdict.value) for r in results] == [("default", "ALLOWED")]
