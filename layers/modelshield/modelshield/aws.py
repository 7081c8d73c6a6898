"""What "not found" looks like in boto3's errors (clients are built in `modelshield.wiring`)."""

from __future__ import annotations

from botocore.exceptions import ClientError

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


def is_not_found(exc: ClientError) -> bool:
    """The object or version does not exist (as opposed to throttling, access denied, ...)."""
    code = str(exc.response.get("Error", {}).get("Code"))
    return code in _NOT_FOUND_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
