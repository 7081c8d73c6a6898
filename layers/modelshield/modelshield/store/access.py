"""The access table: decryption requests and their grants (PK `request_id`, conditional writes on `revision`).

GSIs: StatusIndex (status, created_at) lists pending requests and finds approved ones to expire;
ArtifactIndex (artifact_id, created_at) finds the live grants to move when an artifact is re-wrapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.errors import RequestConflict
from modelshield.models import AccessRequest, RequestStatus
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item

STATUS_INDEX = "StatusIndex"
ARTIFACT_INDEX = "ArtifactIndex"


class DynamoAccessStore:
    """`AccessStore` on DynamoDB. Reads are consistent where a decision depends on them."""

    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)

    def get(self, request_id: str) -> AccessRequest | None:
        item = self.table.get_item(Key={"request_id": request_id}, ConsistentRead=True).get("Item")
        return AccessRequest.model_validate(from_item(item)) if item else None

    def create(self, request: AccessRequest) -> AccessRequest:
        return self._put(request.model_copy(update={"revision": 1}), "attribute_not_exists(request_id)", {})

    def save(self, request: AccessRequest, *, expected_revision: int) -> AccessRequest:
        new = request.model_copy(update={"revision": expected_revision + 1})
        return self._put(new, "revision = :expected", {":expected": expected_revision})

    def by_status(self, status: RequestStatus) -> Iterator[AccessRequest]:
        return self._query(IndexName=STATUS_INDEX, KeyConditionExpression=Key("status").eq(status.value))

    def by_artifact(self, artifact_id: str) -> Iterator[AccessRequest]:
        return self._query(
            IndexName=ARTIFACT_INDEX, KeyConditionExpression=Key("artifact_id").eq(artifact_id)
        )

    def all(self) -> Iterator[AccessRequest]:
        kwargs: dict[str, Any] = {}
        while True:
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                yield AccessRequest.model_validate(from_item(item))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, **kwargs: Any) -> Iterator[AccessRequest]:
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                yield AccessRequest.model_validate(from_item(item))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _put(self, request: AccessRequest, condition: str, values: dict[str, Any]) -> AccessRequest:
        kwargs: dict[str, Any] = {"Item": to_item(request), "ConditionExpression": condition}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.table.put_item(**kwargs)
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise RequestConflict(
                    f"access request {request.request_id} was changed by someone else; re-read it and retry"
                ) from None
            raise
        return request
