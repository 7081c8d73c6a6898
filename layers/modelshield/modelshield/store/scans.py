"""The scans table: append-only scan records, newest first per artifact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.errors import ScanAlreadyRecorded
from modelshield.models import ScanRecord
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item


class ScanStore:
    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)

    def append(self, record: ScanRecord) -> None:
        """Add a record. Never overwrites: the scans table is the audit trail of verdicts."""
        try:
            self.table.put_item(
                Item=to_item(record),
                ConditionExpression="attribute_not_exists(artifact_id) AND attribute_not_exists(scan_ref)",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise ScanAlreadyRecorded(
                    f"scan {record.scan_ref} of {record.artifact_id} already recorded"
                ) from None
            raise

    def get(self, artifact_id: str, scan_ref: str) -> ScanRecord | None:
        item = self.table.get_item(Key={"artifact_id": artifact_id, "scan_ref": scan_ref}).get("Item")
        return ScanRecord.model_validate(from_item(item)) if item else None

    def latest(self, artifact_id: str, version_id: str | None = None) -> ScanRecord | None:
        for record in self.history(artifact_id):
            if version_id is None or record.version_id == version_id:
                return record
        return None

    def history(self, artifact_id: str) -> Iterator[ScanRecord]:
        """Every scan of an artifact (all versions), newest first."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("artifact_id").eq(artifact_id),
            "ScanIndexForward": False,
        }
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                yield ScanRecord.model_validate(from_item(item))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
