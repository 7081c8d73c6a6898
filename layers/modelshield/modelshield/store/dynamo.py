"""Conversions between pydantic models and DynamoDB items (Decimal numbers, no None values)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel


def to_item(model: BaseModel) -> dict[str, Any]:
    return _to_dynamo(model.model_dump(mode="json", exclude_none=True))


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return _from_dynamo(item)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
