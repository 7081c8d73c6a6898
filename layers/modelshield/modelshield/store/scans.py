"""The scans table: append-only scan records, newest first per artifact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.errors import ScanAlreadyRecorded
from modelshield.models import ScanRecord
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item
from modelshield.store.seal import ScanSealer


class ScanStore:
    """`sealer` (store/seal.py) seals every record written and verifies records read for a release."""

    def __init__(self, table_name: str, dynamodb: Any, *, sealer: ScanSealer | None = None) -> None:
        self.table = dynamodb.Table(table_name)
        self.sealer = sealer

    def sealed(self, record: ScanRecord) -> ScanRecord:
        """`record` with its MAC, when this store seals (every writer on AWS does: see template.yaml)."""
        return self.sealer.seal(record) if self.sealer else record

    def seal_refusal(self, record: ScanRecord) -> str | None:
        """Why `record` cannot be trusted as ModelShield's own, or None (always None without a sealer)."""
        if self.sealer is None or self.sealer.verify(record):
            return None
        said = f"the latest scan record ({record.scan_id})"
        if not record.mac:
            return f"{said} carries no seal: it was not written by ModelShield (forged?)"
        return f"{said} does not match its seal: it was written or edited outside ModelShield"

    def append(self, record: ScanRecord) -> None:
        """Add a record (sealed). Never overwrites: the scans table is the audit trail of verdicts."""
        record = self.sealed(record)
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
