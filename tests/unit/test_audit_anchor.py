"""Automatic anchors of the audit chain (moto S3 Object Lock bucket + the audit table from template.yaml).

The attacks are the ones a chain writer can do with its own rights: delete the last records and roll
the head back, or rewrite the tail and recompute every hash and the head. Both must be caught by a plain
`verify` against the latest anchor, with nobody keeping an anchor by hand.
"""

from __future__ import annotations

import boto3
import pytest
from modelshield.audit import AuditAction, AuditLog, AuditRecord, verify_against_latest_anchor
from modelshield.audit_anchor import S3AnchorStore, anchor_chain
from modelshield.local.template import create_template_table
from modelshield.store.audit import DynamoAuditStore, _record_to_item
from moto import mock_aws

TABLE = "audit-anchor-test"
BUCKET = "anchor-bucket"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        create_template_table(boto3.client("dynamodb"), "AuditTable", TABLE)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
        store = DynamoAuditStore(TABLE, boto3.resource("dynamodb"))
        yield store, AuditLog(store, sleep=lambda _s: None), S3AnchorStore(s3, BUCKET, TABLE)


def _fill(log: AuditLog, n: int) -> list[AuditRecord]:
    return [
        log.append(AuditAction.ACCESS_REQUEST, principal="arn:aws:iam::1:role/R", detail={"i": i})
        for i in range(n)
    ]


def _set_head(store: DynamoAuditStore, seq: int, digest: str) -> None:
    store.table.put_item(Item={"pk": "head", "seq": 0, "head_seq": seq, "head_hash": digest})


def test_the_head_is_anchored_and_the_anchor_only_moves_forward(world) -> None:
    store, log, anchors = world
    # Given an empty chain, Then there is nothing to anchor
    assert anchor_chain(store, anchors).status == "empty"
    # When records are appended and the anchor runs
    records = _fill(log, 3)
    result = anchor_chain(store, anchors)
    # Then the head is anchored, and a second run with no new records changes nothing
    assert result.status == "anchored" and (result.anchor.seq, result.anchor.hash) == (3, records[-1].hash)
    assert anchor_chain(store, anchors).status == "unchanged"
    more = _fill(log, 2)
    assert anchor_chain(store, anchors).anchor.hash == more[-1].hash
    # And every anchor is a locked object version (compliance mode)
    latest = anchors.s3.head_object(Bucket=BUCKET, Key=f"anchors/{TABLE}/latest.json")
    assert latest["ObjectLockMode"] == "COMPLIANCE"
    assert verify_against_latest_anchor(log, anchors).ok


def test_deleting_the_tail_and_rolling_the_head_back_is_caught_without_a_manual_anchor(world) -> None:
    store, log, anchors = world
    records = _fill(log, 5)
    anchor_chain(store, anchors)
    # When a chain writer deletes the last two records and rolls the head back consistently
    for seq in (4, 5):
        store.table.delete_item(Key={"pk": "chain", "seq": seq})
    _set_head(store, 3, records[2].hash)
    assert log.verify().ok  # the chain alone looks intact
    # Then the next anchor run refuses to re-anchor the shorter chain, and records an incident
    result = anchor_chain(store, anchors)
    assert result.status == "incident" and "fell back" in result.message
    incidents = anchors.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"anchors/{TABLE}/incidents/")
    assert incidents["KeyCount"] == 1
    # And a plain verify, against the latest automatic anchor, reports the deletion
    report = verify_against_latest_anchor(log, anchors)
    assert not report.ok and report.anchor_source == "automatic"
    assert [(p.seq, p.kind) for p in report.problems] == [(5, "anchor-mismatch")]
    assert "deleted" in report.problems[0].message


def test_a_consistently_rewritten_tail_is_caught(world) -> None:
    store, log, anchors = world
    records = _fill(log, 4)
    anchor_chain(store, anchors)
    # When a writer rewrites records 3 and 4 (new content, recomputed hashes and links) and the head
    prev = records[1].hash
    for original in records[2:]:
        forged = original.model_copy(update={"reason": "nothing happened", "prev_hash": prev}).sealed()
        store.table.put_item(Item=_record_to_item(forged))
        prev = forged.hash
    _set_head(store, 4, prev)
    assert log.verify().ok
    # Then the anchor run sees the anchored record changed, and verify reports where
    assert anchor_chain(store, anchors).status == "incident"
    report = verify_against_latest_anchor(log, anchors)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "anchor-mismatch")]
    assert "rewritten" in report.problems[0].message


def test_an_explicit_anchor_still_wins_over_the_automatic_one(world) -> None:
    store, log, anchors = world
    records = _fill(log, 2)
    anchor_chain(store, anchors)
    from modelshield.audit import ChainHead

    report = verify_against_latest_anchor(log, anchors, anchor=ChainHead(1, records[0].hash))
    assert report.ok and report.anchor_source == "given" and report.anchor.seq == 1
