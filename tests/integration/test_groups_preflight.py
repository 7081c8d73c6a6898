"""`groups apply` checks a file against the live stack before storing it: KMS keys exist and issue data
keys, sources are not another stored group's; problems name the line at fault and nothing is stored.
`--dry-run` also lists the existing artifacts the file would move to another group or judge by other rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield.admin import affected_artifacts
from modelshield.cli import main
from modelshield.models import ArtifactState, EncryptionState, Format, Verdict, utcnow
from modelshield.policy.groups import SecurityGroup, load_groups_with_lines
from modelshield.policy.preflight import check_groups
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.groups import GroupStore
from moto import mock_aws

TABLE = "groups-preflight"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("GROUPS_TABLE", TABLE)
    with mock_aws():
        boto3.resource("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        kms = boto3.client("kms")
        key = kms.create_key(Description="vision")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/vision", TargetKeyId=key)
        yield kms


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    return path


GOOD = """groups:
  - name: Vision
    kms_key_id: alias/vision
    sources: [{type: s3, bucket: ingest, prefix: vision/}]
"""


def test_a_file_naming_a_missing_key_is_refused_with_the_line_and_nothing_is_stored(
    stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file whose second group names a KMS alias that does not exist (line 7)
    path = write(
        tmp_path,
        GOOD + "  - name: Audio\n    description: speech models\n    kms_key_id: alias/modelshield-audio\n"
        "    sources: [{type: s3, bucket: ingest, prefix: audio/}]\n",
    )
    # When it is applied
    code = main(["groups", "apply", str(path)])
    err = capsys.readouterr().err
    # Then it is refused, naming the file, line and field, and what to do
    assert code == 2
    assert (
        f"{path}:7: groups[1].kms_key_id (group 'Audio'): KMS key 'alias/modelshield-audio' does not exist"
        in err
    )
    assert "remove kms_key_id to use the stack's default key" in err
    assert "Traceback" not in err
    # And nothing was stored, not even the valid group
    assert GroupStore(TABLE, boto3.resource("dynamodb")).list() == []


def test_a_disabled_or_non_encryption_key_is_refused(stack: Any, tmp_path: Path) -> None:
    disabled = stack.create_key()["KeyMetadata"]["KeyId"]
    stack.disable_key(KeyId=disabled)
    signing = stack.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    path = write(
        tmp_path,
        f"groups:\n  - name: A\n    kms_key_id: {disabled}\n  - name: B\n    kms_key_id: {signing}\n",
    )
    groups, lines, _ = load_groups_with_lines(path)
    problems = check_groups(groups, lines, kms=stack, stored=[])
    assert [(p.level, p.line, p.field) for p in problems] == [
        ("error", 3, "groups[0].kms_key_id"),
        ("error", 5, "groups[1].kms_key_id"),
    ]
    assert "is Disabled" in problems[0].message and "symmetric encryption key" in problems[1].message


def test_a_source_of_another_stored_group_is_refused_with_its_line(
    stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stored group owning vision/
    assert main(["groups", "apply", str(write(tmp_path, GOOD))]) == 0
    capsys.readouterr()
    # When another file gives vision/ to a new group
    other = tmp_path / "other.yaml"
    other.write_text(
        "groups:\n  - name: Imaging\n    sources:\n      - {type: s3, bucket: ingest, prefix: vision/}\n"
    )
    code = main(["groups", "apply", str(other)])
    # Then it is refused at the source's line, naming the owner
    assert code == 2
    assert (
        f"{other}:4: groups[0].sources[0] (group 'Imaging'): bucket 'ingest' prefix 'vision/' is already a "
        "source of the "
        "stored group 'Vision'" in capsys.readouterr().err
    )
    # But moving the source in the same file (Vision gives it up) is fine
    other.write_text(
        "groups:\n  - name: Vision\n    kms_key_id: alias/vision\n    sources: []\n"
        "  - name: Imaging\n    sources: [{type: s3, bucket: ingest, prefix: vision/}]\n"
    )
    assert main(["groups", "apply", str(other)]) == 0


def test_dry_run_checks_and_reports_without_storing(
    stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    assert main(["groups", "apply", str(path), "--dry-run", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True and out["changes"] == [
        {"name": "Vision", "change": "created", "from": None, "to": 1}
    ]
    assert GroupStore(TABLE, boto3.resource("dynamodb")).list() == []
    assert main(["groups", "apply", str(path)]) == 0
    capsys.readouterr()
    assert main(["groups", "apply", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Vision: would be unchanged (v1)"


ARTIFACTS = "groups-preflight-artifacts"


def artifact(key: str, group: str, version: str = "v1") -> ArtifactState:
    return ArtifactState(
        artifact_id=f"ingest/{key}",
        version_id=version,
        bucket="ingest",
        key=key,
        size=1,
        format=Format.SAFETENSORS,
        group=group,
        verdict=Verdict.ALLOWED,
        encryption_state=EncryptionState.ENCRYPTED,
        latest_scan_ref="scan",
        updated_at=utcnow(),
    )


@pytest.fixture
def artifacts(stack: Any, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    monkeypatch.setenv("ARTIFACTS_TABLE", ARTIFACTS)
    boto3.resource("dynamodb").create_table(
        TableName=ARTIFACTS,
        KeySchema=[
            {"AttributeName": "artifact_id", "KeyType": "HASH"},
            {"AttributeName": "version_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "artifact_id", "AttributeType": "S"},
            {"AttributeName": "version_id", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return ArtifactStore(ARTIFACTS, boto3.resource("dynamodb"))


EDIT = """groups:
  - name: Vision
    kms_key_id: alias/vision
    sources: [{type: s3, bucket: ingest, prefix: vision/}]
    rules:
      MS-LICENSE: {blocking: true}
  - name: Audio
    sources: [{type: s3, bucket: ingest, prefix: audio/}]
"""


def test_dry_run_lists_the_artifacts_that_would_change_group_or_rules(
    stack: Any, artifacts: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stored Vision group and artifacts under vision/ (two versions), audio/ and elsewhere
    assert main(["groups", "apply", str(write(tmp_path, GOOD))]) == 0
    capsys.readouterr()
    for state in (
        artifact("vision/a.pt", "Vision"),
        artifact("vision/a.pt", "Vision", "v2"),
        artifact("audio/b.pt", "default"),
        artifact("other/c.pt", "default"),
    ):
        artifacts.save(state, expected_revision=None)
    edit = tmp_path / "edit.yaml"
    edit.write_text(EDIT)

    # When a file that tightens Vision's rules and gives audio/ to a new group is dry-run, as JSON
    assert main(["groups", "apply", str(edit), "--dry-run", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)

    # Then it names each affected artifact, how it changes, and leaves the unaffected one out
    assert out["affected"] == {
        "count": 2,
        "truncated": False,
        "artifacts": [
            {
                "artifact": "ingest/audio/b.pt",
                "versions": 1,
                "from_group": "default",
                "to_group": "Audio",
                "changes": ["group"],
                "verdict": "ALLOWED",
            },
            {
                "artifact": "ingest/vision/a.pt",
                "versions": 2,
                "from_group": "Vision",
                "to_group": "Vision",
                "changes": ["rules"],
                "verdict": "ALLOWED",
            },
        ],
    }
    # And the table says the same, one line each, and nothing was stored
    assert main(["groups", "apply", str(edit), "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "affected artifacts: 2 would change group, rules or key" in table
    audio = next(line for line in table.splitlines() if "ingest/audio/b.pt" in line)
    vision = next(line for line in table.splitlines() if "ingest/vision/a.pt" in line)
    assert "default -> Audio" in audio and "group" in audio
    assert "rules" in vision and " 2 " in vision
    assert "other/c.pt" not in table
    assert [g.name for g in GroupStore(TABLE, boto3.resource("dynamodb")).list()] == ["Vision"]


def test_the_affected_list_is_bounded_but_the_count_is_not() -> None:
    # Given 30 artifacts that a new group would take over
    before = [SecurityGroup(name="default")]
    after = [
        *before,
        SecurityGroup(name="Audio", sources=[{"type": "s3", "bucket": "ingest", "prefix": "a/"}]),
    ]
    states = [artifact(f"a/{n:02d}.pt", "default") for n in range(30)]
    # When the change is assessed with a list of 25
    affected = affected_artifacts(before, after, states, listed=25)
    # Then all 30 are counted, 25 listed in order, and the list says it was cut
    assert affected["count"] == 30 and affected["truncated"] is True
    assert [a["artifact"] for a in affected["artifacts"]] == [f"ingest/a/{n:02d}.pt" for n in range(25)]
