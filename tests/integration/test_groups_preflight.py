"""`groups apply` checks a file against the live stack before storing it: KMS keys exist and issue data
keys, sources are not another stored group's; problems name the line at fault and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield.cli import main
from modelshield.policy.groups import load_groups_with_lines
from modelshield.policy.preflight import check_groups
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
    assert f"{path}:7: groups[1].kms_key_id: KMS key 'alias/modelshield-audio' does not exist" in err
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
        f"{other}:4: groups[0].sources[0]: bucket 'ingest' prefix 'vision/' is already a source of the "
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
