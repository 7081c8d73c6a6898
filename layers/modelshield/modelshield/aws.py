"""The few boto3 conventions every module shares: how S3 clients are built, what "not found" looks like."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


def s3_client() -> Any:
    """An S3 client that adds no per-request payload checksums (moto is quadratic with them, TOOLING.md),
    while S3 still stores and reports the checksums we ask for explicitly, which is what we verify."""
    return boto3.client(
        "s3",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 5},
        ),
    )


def is_not_found(exc: ClientError) -> bool:
    """The object or version does not exist (as opposed to throttling, access denied, ...)."""
    code = str(exc.response.get("Error", {}).get("Code"))
    return code in _NOT_FOUND_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
