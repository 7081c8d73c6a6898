"""What "not found" looks like in boto3's errors (clients are built in `modelshield.wiring`)."""

from __future__ import annotations

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from modelshield.errors import StackNotRunning

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


def is_not_found(exc: ClientError) -> bool:
    """The object or version does not exist (as opposed to throttling, access denied, ...)."""
    code = str(exc.response.get("Error", {}).get("Code"))
    return code in _NOT_FOUND_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


NO_STACK = "no stack answers at {where}"
NO_STACK_HINT = (
    'start one with `modelshield local up` and `eval "$(modelshield local env)"`, or point AWS_ENDPOINT_URL '
    "(unset: AWS itself) and the table/bucket variables at a running stack"
)


def no_stack(where: str, reason: str) -> StackNotRunning:
    return StackNotRunning(f"{NO_STACK.format(where=where)} ({reason}): {NO_STACK_HINT}")


def unreachable(exc: BaseException) -> StackNotRunning | None:
    """The one "no stack" error for a connection that failed (refused, timed out, dropped), else None.

    Every command maps connection failures through here, so a dead stack reads the same everywhere.
    """
    if not isinstance(exc, BotoConnectionError | ConnectionClosedError):
        return None
    where = str(getattr(exc, "kwargs", {}).get("endpoint_url") or "the configured endpoint")
    reason = "connection refused" if isinstance(exc, EndpointConnectionError) else type(exc).__name__
    return StackNotRunning(f"{NO_STACK.format(where=where)} ({reason}): {NO_STACK_HINT}")
