"""The groups table under moto: seeding, conditional versioned writes, and `modelshield groups` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield.cli import main
from modelshield.models import RuleId
from modelshield.policy.groups import SecurityGroup, default_groups
from modelshield.store.groups import GroupNotFound, GroupStore, GroupVersionConflict
from moto import mock_aws

from tests.builders import moto_credentials

TABLE = "groups-test"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto_credentials(monkeypatch)
    monkeypatch.setenv("GROUPS_TABLE", TABLE)
    with mock_aws():
        resource = boto3.resource("dynamodb")
        resource.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield resource


@pytest.fixture
def store(dynamodb: Any) -> GroupStore:
    return GroupStore(TABLE, dynamodb)


def test_seeding_creates_missing_groups_only(store: GroupStore) -> None:
    # Given the defaults seeded once, and one of them edited afterwards
    assert store.seed_defaults(default_groups(ingest_bucket="ingest")) == [
        "HuggingFace-Research",
        "S3-Production",
        "Partner-S3-Audit",
        "default",
    ]
    edited = store.get("default").model_copy(update={"description": "edited by security"})
    store.put(edited)
    # When seeding runs again (a redeploy)
    assert store.seed_defaults(default_groups(ingest_bucket="ingest")) == []
    # Then the edit survives and every group reads back intact
    assert store.get("default").description == "edited by security"
    stored = {g.name: g for g in store.list()}
    for group in default_groups(ingest_bucket="ingest"):
        if group.name != "default":
            assert stored[group.name] == group


def test_put_bumps_the_version_and_skips_unchanged_writes(store: GroupStore) -> None:
    group = SecurityGroup(name="g")
    assert store.put(group).version == 1
    assert store.put(group).version == 1  # nothing changed
    changed = store.put(group.model_copy(update={"description": "new"}))
    assert changed.version == 2
    assert store.get("g").version == 2


def test_a_stale_expected_version_is_a_conflict(store: GroupStore) -> None:
    store.put(SecurityGroup(name="g"))
    store.put(SecurityGroup(name="g", description="someone else's edit"))
    with pytest.raises(GroupVersionConflict, match="version 2, not 1"):
        store.put(SecurityGroup(name="g", description="mine"), expected_version=1)
    with pytest.raises(GroupVersionConflict):
        store.put(SecurityGroup(name="new"), expected_version=3)
    assert store.put(SecurityGroup(name="new"), expected_version=0).version == 1


def test_a_concurrent_write_between_read_and_write_is_a_conflict(
    store: GroupStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a group at version 1, and another writer that lands right after our read
    store.put(SecurityGroup(name="g"))
    original_find = store.find

    def find_then_race(name: str) -> SecurityGroup | None:
        seen = original_find(name)
        store.table.update_item(
            Key={"name": name}, UpdateExpression="SET version = :v", ExpressionAttributeValues={":v": 2}
        )
        return seen

    monkeypatch.setattr(store, "find", find_then_race)
    # Then our write fails instead of overwriting the other one
    with pytest.raises(GroupVersionConflict, match="changed while being written"):
        store.put(SecurityGroup(name="g", description="mine"))


def test_get_of_an_unknown_group_is_not_found(store: GroupStore) -> None:
    with pytest.raises(GroupNotFound, match="no security group named 'nope'"):
        store.get("nope")


# -- the CLI -------------------------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    return path


def test_groups_apply_list_show_round_trip(
    dynamodb: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a groups file applied to the table
    path = write(
        tmp_path,
        'groups:\n  - name: Vision\n    sources: [{type: s3, bucket: "${IngestBucket}", prefix: vision/}]\n'
        "    rules: {MS-LICENSE: {blocking: false}}\n",
    )
    assert main(["groups", "apply", str(path), "--ingest-bucket", "ingest-bucket"]) == 0
    assert capsys.readouterr().out.strip() == "Vision: created (v1)"
    # When it is listed and shown
    assert main(["groups", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["groups"]
    assert [(g["name"], g["version"], g["sources"][0]["bucket"]) for g in listed] == [
        ("Vision", 1, "ingest-bucket")
    ]
    assert main(["groups", "show", "Vision"]) == 0
    shown = capsys.readouterr().out
    # Then `show` prints YAML that `apply` takes back: editing it bumps the version
    edited = write(tmp_path, shown.replace("blocking: false", "blocking: true"))
    assert main(["groups", "apply", str(edited)]) == 0
    assert capsys.readouterr().out.strip() == "Vision: updated (v1 -> v2)"
    assert GroupStore(TABLE, dynamodb).get("Vision").rule(RuleId.LICENSE).blocking
    # And re-applying the now stale copy (it still says version 1) is refused, changing nothing
    assert main(["groups", "apply", str(edited)]) == 2
    assert "says version 1 but the stored one is version 2" in capsys.readouterr().err


def test_groups_apply_of_an_invalid_file_writes_nothing(
    dynamodb: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, "groups:\n  - name: ok\n  - name: bad\n    rules: {MS-MALFORMED: {enabled: false}}\n"
    )
    assert main(["groups", "apply", str(path)]) == 2
    assert "groups.yaml:4: groups[1].rules.MS-MALFORMED.enabled" in capsys.readouterr().err
    assert GroupStore(TABLE, dynamodb).list() == []  # nothing stored (list would show the built-in defaults)


def test_groups_commands_without_a_table_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GROUPS_TABLE", raising=False)
    assert main(["groups", "list"]) == 2
    assert "GROUPS_TABLE is not set" in capsys.readouterr().err


def test_groups_show_of_an_unknown_group_exits_2(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["groups", "show", "nope"]) == 2
    assert "no security group named 'nope'" in capsys.readouterr().err


def test_groups_validate_is_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No AWS at all: validate must not need it
    examples = Path(__file__).resolve().parents[2] / "examples" / "groups.yaml"
    assert main(["groups", "validate", str(examples)]) == 0
    assert "valid, 3 group(s)" in capsys.readouterr().out
    bad = write(tmp_path, "groups:\n  - name: g\n    rules: {MS-NOPE: {}}\n")
    assert main(["groups", "validate", str(bad), "--format", "json"]) == 2
    assert "groups.yaml:3: groups[0].rules.MS-NOPE: unknown rule id" in capsys.readouterr().err


def test_an_empty_table_lists_the_built_in_defaults_the_scanner_uses(
    dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fresh deploy: no groups stored yet
    # When the groups are listed and one is shown
    assert main(["groups", "list", "--format", "json"]) == 0
    listed = capsys.readouterr()
    assert main(["groups", "show", "S3-Production"]) == 0
    shown = capsys.readouterr()
    # Then the built-in defaults are shown, labelled as not stored
    names = {g["name"] for g in json.loads(listed.out)["groups"]}
    assert {"HuggingFace-Research", "S3-Production", "Partner-S3-Audit", "default"} <= names
    assert "no groups stored yet" in listed.err and "S3-Production" in shown.out
