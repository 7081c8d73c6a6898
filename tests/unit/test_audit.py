"""The hash-chained audit log on a moto DynamoDB table: append, idempotency, contention, list, verify."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from modelshield.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditLog,
    AuditQuery,
    AuditRecord,
    ChainHead,
    Decision,
)
from modelshield.errors import UsageError
from modelshield.local.template import create_template_table
from modelshield.store.audit import DynamoAuditStore
from modelshield.wiring import dynamodb
from moto import mock_aws

from tests.builders import moto_credentials

TABLE = "audit-test"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    moto_credentials(monkeypatch)
    with mock_aws():
        create_template_table(boto3.client("dynamodb"), "AuditTable", TABLE)
        yield


@pytest.fixture
def store(aws) -> DynamoAuditStore:
    return DynamoAuditStore(TABLE, dynamodb())


@pytest.fixture
def log(store: DynamoAuditStore) -> AuditLog:
    return AuditLog(store, sleep=lambda _s: None)


def _fill(log: AuditLog, n: int) -> list[AuditRecord]:
    return [
        log.append(
            AuditAction.ACCESS_REQUEST,
            principal=f"arn:aws:iam::123456789012:role/R{i % 2}",
            artifact_id=f"bucket/model-{i % 3}.pt",
            decision=Decision.ALLOWED if i % 2 == 0 else Decision.DENIED,
            detail={"i": i},
        )
        for i in range(n)
    ]


def _table():
    return boto3.resource("dynamodb").Table(TABLE)


def test_appended_records_form_a_contiguous_linked_chain(log: AuditLog) -> None:
    # Given an empty log
    # When five events are appended
    records = _fill(log, 5)
    # Then they are numbered 1..5, each links to the previous hash, and verify finds nothing wrong
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS_HASH
    for prev, rec in itertools.pairwise(records):
        assert rec.prev_hash == prev.hash
    report = log.verify()
    assert report.ok and report.checked == 5 and report.problems == []
    assert report.head == ChainHead(5, records[-1].hash)


def test_hash_covers_canonical_content_not_dict_order() -> None:
    # Given two records whose detail dicts differ only in insertion order
    base = {
        "seq": 1,
        "event_id": "e",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "action": "x",
        "decision": Decision.INFO,
        "prev_hash": GENESIS_HASH,
    }
    a = AuditRecord(**base, detail={"a": 1, "b": [1, 2]}).sealed()
    b = AuditRecord(**base, detail={"b": [1, 2], "a": 1}).sealed()
    # Then the hashes agree, and any change of content changes the hash
    assert a.hash == b.hash
    assert AuditRecord(**base, detail={"a": 2, "b": [1, 2]}).sealed().hash != a.hash
    assert a.model_copy(update={"principal": "someone"}).compute_hash() != a.hash


def test_idempotency_key_records_an_event_once(log: AuditLog) -> None:
    # Given an event recorded with an idempotency key
    first = log.append("kms.Decrypt", principal="p", idempotency_key="cloudtrail:abc")
    # When the same key is appended again (a redelivered event)
    again = log.append("kms.Decrypt", principal="p", idempotency_key="cloudtrail:abc")
    # Then the first record is returned and the chain did not grow
    assert again.seq == first.seq == 1 and again.hash == first.hash
    assert log.store.head() == ChainHead(1, first.hash)


def test_a_writer_that_loses_the_head_race_retries_without_forking(store: DynamoAuditStore) -> None:
    # Given writer A that reads the head, and writer B that appends right after A's read
    writer_b = AuditLog(DynamoAuditStore(TABLE, dynamodb()), sleep=lambda _s: None)
    real_head = store.head
    calls = {"n": 0}

    def head_then_race():
        head = real_head()
        calls["n"] += 1
        if calls["n"] == 1:
            writer_b.append("group.change", principal="b")
        return head

    store.head = head_then_race  # type: ignore[method-assign]
    writer_a = AuditLog(store, sleep=lambda _s: None)
    # When A appends with its stale head
    record_a = writer_a.append("rescan", principal="a")
    # Then A's conditional write failed once, A retried on the new head, and the chain is linear
    assert calls["n"] == 2
    assert record_a.seq == 2
    assert AuditLog(DynamoAuditStore(TABLE, dynamodb())).verify().ok


def test_verify_reports_a_record_deleted_from_the_middle(log: AuditLog) -> None:
    # Given a chain of six records
    _fill(log, 6)
    # When record 3 is deleted behind the log's back
    _table().delete_item(Key={"pk": "chain", "seq": 3})
    # Then verify says record 3 is missing (and nothing else)
    report = log.verify()
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "missing")]
    assert "record 3 deleted" in report.problems[0].message


def test_verify_reports_an_edited_record(log: AuditLog) -> None:
    # Given a chain of four records
    _fill(log, 4)
    # When someone changes the decision of record 2
    _table().update_item(
        Key={"pk": "chain", "seq": 2},
        UpdateExpression="SET decision = :d",
        ExpressionAttributeValues={":d": "ALLOWED"},
    )
    # Then verify points at record 2 as edited
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "edited")]


def test_verify_reports_an_edit_whose_hash_was_recomputed(log: AuditLog, store: DynamoAuditStore) -> None:
    # Given a chain of four records
    _fill(log, 4)
    # When record 2 is rewritten with a freshly computed hash (a careful forger)
    forged = store.get(2).model_copy(update={"reason": "nothing to see"}).sealed()  # type: ignore[union-attr]
    _table().update_item(
        Key={"pk": "chain", "seq": 2},
        UpdateExpression="SET reason = :r, #h = :h",
        ExpressionAttributeNames={"#h": "hash"},
        ExpressionAttributeValues={":r": forged.reason, ":h": forged.hash},
    )
    # Then record 3 no longer links to it, and verify says record 2 was rewritten
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "relinked")]
    assert "record 2 was rewritten" in report.problems[0].message


def test_verify_reports_records_deleted_from_the_end(log: AuditLog) -> None:
    # Given a chain of five records
    _fill(log, 5)
    # When the last two are deleted
    for seq in (4, 5):
        _table().delete_item(Key={"pk": "chain", "seq": seq})
    # Then verify compares with the head and reports the truncation
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "truncated")]


def test_verify_against_an_anchor_catches_a_wholesale_rewrite(log: AuditLog) -> None:
    # Given a head saved elsewhere after three records
    records = _fill(log, 3)
    anchor = ChainHead(3, records[-1].hash)
    assert log.verify(anchor=anchor).ok
    # When the anchor no longer matches (the chain was rebuilt from scratch)
    report = log.verify(anchor=ChainHead(3, "f" * 64))
    # Then verify reports the anchor mismatch at record 3
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "anchor-mismatch")]


def test_list_filters_by_artifact_principal_action_decision_and_time(log: AuditLog) -> None:
    # Given records spread over artifacts, principals, decisions and times
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(9):
        log.append(
            "access.request" if i % 3 else "grant.create",
            principal=f"p{i % 2}",
            artifact_id=f"b/m{i % 3}",
            decision=Decision.DENIED if i == 4 else Decision.ALLOWED,
            at=t0 + timedelta(hours=i),
        )
    # Then each filter selects exactly the matching records, newest first by default
    assert [r.seq for r in log.list(AuditQuery(artifact_id="b/m1"))] == [8, 5, 2]
    assert [r.seq for r in log.list(AuditQuery(principal="p1", newest_first=False))] == [2, 4, 6, 8]
    assert [r.seq for r in log.list(AuditQuery(action="grant.create"))] == [7, 4, 1]
    assert [r.seq for r in log.list(AuditQuery(decision=Decision.DENIED))] == [5]
    window = AuditQuery(since=t0 + timedelta(hours=2), until=t0 + timedelta(hours=4))
    assert [r.seq for r in log.list(window)] == [5, 4, 3]
    assert [r.seq for r in log.list(AuditQuery(artifact_id="b/m0", principal="p0"))] == [7, 1]
    assert len(log.list(AuditQuery(limit=2))) == 2


def test_oversized_detail_is_refused(log: AuditLog) -> None:
    # Given a detail larger than an audit record may carry
    # Then append refuses it instead of writing a record DynamoDB would reject
    with pytest.raises(UsageError):
        log.append("rescan", detail={"blob": "x" * 40_000})
    assert log.store.head() is None
