"""The audit table in DynamoDB: the hash chain, its head, idempotency markers and job checkpoints.

Item layout (PK `pk` string, SK `seq` number):
  pk="chain",        seq=N   one audit record (the chain); GSIs ArtifactIndex / PrincipalIndex on it
  pk="head",         seq=0   the chain head: head_seq, head_hash (moved only by a conditional write)
  pk="idem#<key>",   seq=0   "this idempotency key was recorded as record N"
  pk="state#<name>", seq=0   a job checkpoint (rotation), versioned by `revision`

Records are written with `attribute_not_exists` and never updated; the IAM policy for writers can pin
UpdateItem to the `head` and `state#*` partitions with `dynamodb:LeadingKeys` (see docs/keys-and-access.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionBase, Key
from botocore.exceptions import ClientError

from modelshield.audit import (
    ATTEMPT_TAG,
    DECRYPTION_ATTEMPT_ACTIONS,
    AuditQuery,
    AuditRecord,
    ChainConflict,
    ChainHead,
    DuplicateEvent,
    format_time,
    parse_time,
)
from modelshield.errors import AuditWriteError, CheckpointConflict

__all__ = ["CheckpointConflict", "DynamoAuditStore", "DynamoCheckpointStore"]

CHAIN_PK = "chain"
HEAD_PK = "head"
ARTIFACT_INDEX = "ArtifactIndex"
PRINCIPAL_INDEX = "PrincipalIndex"  # index names as template.yaml's AuditTable declares them
ATTEMPT_INDEX = "AttemptIndex"  # sparse: decryption-attempt records only (the dashboard's attempts table)


def _record_to_item(record: AuditRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": CHAIN_PK,
        "seq": record.seq,
        "event_id": record.event_id,
        "at": format_time(record.at),
        "action": record.action,
        "decision": record.decision.value,
        "reason": record.reason,
        "source": record.source,
        "detail": json.dumps(record.detail, sort_keys=True),  # a string: no Decimal/float drift
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
    # Index keys may not be empty strings: absent means "none" and keeps the indexes sparse.
    for name in ("principal", "artifact_id", "version_id", "request_id"):
        value = getattr(record, name)
        if value:
            item[name] = value
    if record.action in DECRYPTION_ATTEMPT_ACTIONS:  # derived from hashed fields: nothing to forge
        item["attempt"] = ATTEMPT_TAG
    return item


def _item_to_record(item: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=int(item["seq"]),
        event_id=str(item["event_id"]),
        at=parse_time(str(item["at"])),
        action=str(item["action"]),
        decision=item["decision"],
        principal=str(item.get("principal", "")),
        artifact_id=item.get("artifact_id"),
        version_id=item.get("version_id"),
        request_id=item.get("request_id"),
        reason=str(item.get("reason", "")),
        source=str(item.get("source", "")),
        detail=json.loads(item.get("detail") or "{}"),
        prev_hash=str(item["prev_hash"]),
        hash=str(item.get("hash", "")),
    )


class DynamoAuditStore:
    """`AuditStore` on one DynamoDB table."""

    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self._resource = dynamodb
        self.table = self._resource.Table(table_name)
        self.table_name = table_name

    # -- AuditStore ------------------------------------------------------------------------------
    def head(self) -> ChainHead | None:
        item = self.table.get_item(Key={"pk": HEAD_PK, "seq": 0}, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return ChainHead(seq=int(item["head_seq"]), hash=str(item["head_hash"]))

    def append(self, record: AuditRecord, expected: ChainHead, idempotency_key: str | None) -> None:
        head_update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": HEAD_PK, "seq": 0},
            "UpdateExpression": "SET head_seq = :new, head_hash = :hash, updated_at = :at",
            "ExpressionAttributeValues": {
                ":new": record.seq,
                ":hash": record.hash,
                ":at": format_time(record.at),
            },
        }
        if expected.seq == 0:
            head_update["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            head_update["ConditionExpression"] = "head_seq = :old"
            head_update["ExpressionAttributeValues"][":old"] = expected.seq
        items: list[dict[str, Any]] = [
            {"Update": head_update},
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": _record_to_item(record),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if idempotency_key:
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": {"pk": f"idem#{idempotency_key}", "seq": 0, "record_seq": record.seq},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        try:
            self._resource.meta.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "TransactionCanceledException":
                raise AuditWriteError(f"audit table {self.table_name}: {code or exc}") from exc
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if idempotency_key and len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                marker = self.table.get_item(
                    Key={"pk": f"idem#{idempotency_key}", "seq": 0}, ConsistentRead=True
                ).get("Item")
                if marker is not None:
                    raise DuplicateEvent(int(marker["record_seq"])) from None
            raise ChainConflict(str(reasons)) from None

    def records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        yield from (
            _item_to_record(item)
            for item in self._paginate(
                KeyConditionExpression=Key("pk").eq(CHAIN_PK) & Key("seq").gt(after_seq),
                ScanIndexForward=True,
                ConsistentRead=True,
            )
        )

    def get(self, seq: int) -> AuditRecord | None:
        item = self.table.get_item(Key={"pk": CHAIN_PK, "seq": seq}, ConsistentRead=True).get("Item")
        return None if item is None else _item_to_record(item)

    def query(self, query: AuditQuery) -> Iterator[AuditRecord]:
        filters: list[ConditionBase] = []
        kwargs: dict[str, Any] = {"ScanIndexForward": not query.newest_first}
        if query.artifact_id:
            kwargs["IndexName"] = ARTIFACT_INDEX
            kwargs["KeyConditionExpression"] = Key("artifact_id").eq(query.artifact_id)
            if query.principal:
                filters.append(Attr("principal").eq(query.principal))
        elif query.principal:
            kwargs["IndexName"] = PRINCIPAL_INDEX
            kwargs["KeyConditionExpression"] = Key("principal").eq(query.principal)
        else:
            kwargs["KeyConditionExpression"] = Key("pk").eq(CHAIN_PK)
        if query.action:
            filters.append(Attr("action").eq(query.action))
        if query.decision:
            filters.append(Attr("decision").eq(query.decision.value))
        if query.since:
            filters.append(Attr("at").gte(format_time(query.since)))
        if query.until:
            filters.append(Attr("at").lte(format_time(query.until)))
        if filters:
            combined = filters[0]
            for extra in filters[1:]:
                combined = combined & extra
            kwargs["FilterExpression"] = combined
        yield from (_item_to_record(item) for item in self._paginate(**kwargs))

    def _paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self.table.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class DynamoCheckpointStore:
    """Small versioned JSON documents (job checkpoints) kept in the audit table under `state#<name>`.

    Kept beside the chain rather than in a table of their own: one table fewer, and every run that
    writes a checkpoint also writes audit records, so it already has access to this table.
    """

    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)

    def get(self, name: str) -> tuple[dict[str, Any], int] | None:
        item = self.table.get_item(Key={"pk": f"state#{name}", "seq": 0}, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return json.loads(item["state"]), int(item["revision"])

    def put(self, name: str, state: dict[str, Any], *, expected_revision: int | None) -> int:
        """Write `state` if the stored revision is still `expected_revision` (None: must not exist)."""
        new_revision = (expected_revision or 0) + 1
        condition = (
            Attr("pk").not_exists() if expected_revision is None else Attr("revision").eq(expected_revision)
        )
        try:
            self.table.put_item(
                Item={
                    "pk": f"state#{name}",
                    "seq": 0,
                    "state": json.dumps(state, sort_keys=True, default=_json_default),
                    "revision": new_revision,
                },
                ConditionExpression=condition,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise CheckpointConflict(name) from None
            raise
        return new_revision


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def record_from_item(item: dict[str, Any]) -> AuditRecord:
    """An audit record from its stored item (as read from the table or a stream image)."""
    return _item_to_record(item)
