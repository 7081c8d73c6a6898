"""The HTTP API (API Gateway, IAM auth): one router module per area, one place mapping errors to statuses.

`functions/api/app.py` builds the resolver, includes every `*_routes.router` and calls
`register_error_handlers`. Routes read the caller from the IAM-authenticated request context only
(`caller_arn`), never from the body, so nobody can act as someone else by sending a different name.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from modelshield.errors import (
    AccessDenied,
    ArtifactNotFound,
    ConfigError,
    IntegrityError,
    KeyAccessError,
    ModelShieldError,
    UsageError,
)

# The one mapping from domain exceptions to HTTP statuses (most specific class first).
# Others (RequestNotFound, RequestConflict) are registered by name below to avoid import cycles.
STATUS_BY_ERROR: list[tuple[type[Exception], HTTPStatus]] = [
    (UsageError, HTTPStatus.BAD_REQUEST),
    (AccessDenied, HTTPStatus.FORBIDDEN),
    (ArtifactNotFound, HTTPStatus.NOT_FOUND),
    (KeyAccessError, HTTPStatus.BAD_GATEWAY),
    (IntegrityError, HTTPStatus.CONFLICT),
    (ConfigError, HTTPStatus.INTERNAL_SERVER_ERROR),
]


def status_for(exc: Exception) -> HTTPStatus:
    from modelshield.access import RequestConflict, RequestNotFound
    from modelshield.store.groups import GroupNotFound, GroupVersionConflict

    for cls, status in [
        (RequestNotFound, HTTPStatus.NOT_FOUND),
        (RequestConflict, HTTPStatus.CONFLICT),
        (GroupNotFound, HTTPStatus.NOT_FOUND),
        (GroupVersionConflict, HTTPStatus.CONFLICT),
    ]:
        if isinstance(exc, cls):
            return status
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(exc: Exception) -> Response[Any]:
    status = status_for(exc)
    # Server-side failures say nothing about internals; domain refusals say exactly what was wrong.
    message = str(exc) if status < 500 or isinstance(exc, ModelShieldError) else "internal error"
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body={"error": type(exc).__name__, "message": message},
    )


def register_error_handlers(app: Any) -> None:
    app.exception_handler(ModelShieldError)(error_response)


def caller_arn(event: Any) -> str:
    """The IAM principal API Gateway authenticated (requestContext.identity.userArn)."""
    arn = event.request_context.identity.user_arn
    if not arn:
        raise AccessDenied("the request carries no IAM identity (the route must use AWS_IAM authorization)")
    return str(arn)
