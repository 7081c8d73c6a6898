"""The one write that records a scan: its append-only scan record and the artifact version's new state,
in a single DynamoDB transaction.

Written separately, a failure between the two (and the retry) left two scan records for one version, or
a record whose state never moved on. In one transaction both land or neither does; the state's condition
(`attribute_not_exists` for a new version, `revision = :expected` for an update) makes a retry or a
second container that lost the race fail as `AlreadyRecorded` instead of writing a duplicate.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from modelshield.errors import ModelShieldError
from modelshield.models import ArtifactState, ScanRecord, utcnow
from modelshield.store.dynamo import to_item


class AlreadyRecorded(ModelShieldError):
    """The artifact version's state changed since it was read (another attempt recorded it first)."""


def record_scan(
    client: Any,
    *,
    scans_table: str,
    artifacts_table: str,
    record: ScanRecord,
    state: ArtifactState,
    expected_revision: int | None,
) -> ArtifactState:
    """Append `record` and save `state` atomically. Returns the saved state (revision bumped).

    `client` is a DynamoDB resource's client (`table.meta.client`), which takes plain Python values."""
    revision = 1 if expected_revision is None else expected_revision + 1
    new = state.model_copy(update={"revision": revision, "updated_at": utcnow()})
    state_put: dict[str, Any] = {"TableName": artifacts_table, "Item": to_item(new)}
    if expected_revision is None:
        state_put["ConditionExpression"] = "attribute_not_exists(artifact_id)"
    else:
        state_put["ConditionExpression"] = "revision = :expected"
        state_put["ExpressionAttributeValues"] = {":expected": expected_revision}
    try:
        client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": scans_table,
                        "Item": to_item(record),
                        "ConditionExpression": "attribute_not_exists(scan_ref)",
                    }
                },
                {"Put": state_put},
            ]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons or not reasons:
                raise AlreadyRecorded(
                    f"artifact {state.artifact_id} version {state.version_id} was recorded by another "
                    f"attempt (expected revision {expected_revision})"
                ) from None
        raise
    return new
