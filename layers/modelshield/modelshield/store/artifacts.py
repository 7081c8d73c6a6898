"""The artifacts table: the current state of every artifact version, updated with optimistic locking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.errors import ConcurrentUpdate
from modelshield.models import ArtifactState, utcnow
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item

__all__ = ["ArtifactStore", "ConcurrentUpdate"]


class ArtifactStore:
    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)

    def get(self, artifact_id: str, version_id: str) -> ArtifactState | None:
        item = self.table.get_item(Key={"artifact_id": artifact_id, "version_id": version_id}).get("Item")
        return ArtifactState.model_validate(from_item(item)) if item else None

    def versions(self, artifact_id: str) -> list[ArtifactState]:
        """Every recorded version of an artifact, newest source object first."""
        items: list[ArtifactState] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("artifact_id").eq(artifact_id)}
        while True:
            page = self.table.query(**kwargs)
            items.extend(ArtifactState.model_validate(from_item(i)) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(items, key=lambda s: s.last_modified or s.updated_at, reverse=True)

    def all(self) -> Iterator[ArtifactState]:
        """Every artifact version (paginated table scan; for rotation and dashboards)."""
        kwargs: dict[str, Any] = {}
        while True:
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                yield ArtifactState.model_validate(from_item(item))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save(self, state: ArtifactState, *, expected_revision: int | None) -> ArtifactState:
        """Create (expected_revision None) or replace a record only if nobody changed it meanwhile."""
        if expected_revision is None:
            new = state.model_copy(update={"revision": 1, "updated_at": utcnow()})
            condition = "attribute_not_exists(artifact_id)"
            values: dict[str, Any] = {}
        else:
            new = state.model_copy(update={"revision": expected_revision + 1, "updated_at": utcnow()})
            condition = "revision = :expected"
            values = {":expected": expected_revision}
        try:
            kwargs: dict[str, Any] = {"Item": to_item(new), "ConditionExpression": condition}
            if values:
                kwargs["ExpressionAttributeValues"] = values
            self.table.put_item(**kwargs)
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise ConcurrentUpdate(
                    f"artifact {state.artifact_id} version {state.version_id} changed concurrently "
                    f"(expected revision {expected_revision})"
                ) from None
            raise
        return new
