"""The HTTP API (API Gateway, IAM auth): one router module per area, one place mapping errors to statuses.

`functions/api/app.py` builds the resolver, includes every `*_routes.router` and calls
`register_error_handlers`. Routes read the caller from the IAM-authenticated request context only
(`caller_arn`), never from the body, so nobody can act as someone else by sending a different name.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from modelshield.errors import AccessDenied, ModelShieldError
from modelshield.wiring import ApiServices

_services: ApiServices | None = None


def services() -> ApiServices:
    """The routes' collaborators, built on first use and cached per container (see wiring.ApiServices)."""
    global _services
    if _services is None:
        _services = ApiServices()
    return _services


def use_services(prepared: ApiServices | None) -> None:
    """Hand the routes prepared services (tests); None goes back to building them from the settings."""
    global _services
    _services = prepared


def status_for(exc: Exception) -> HTTPStatus:
    """The HTTP status of an exception: what errors.py declares for it, 500 for anything unexpected."""
    return exc.http_status if isinstance(exc, ModelShieldError) else HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(exc: Exception) -> Response[Any]:
    status = status_for(exc)
    # Server-side failures say nothing about internals; domain refusals say exactly what was wrong.
    message = str(exc) if status < 500 or isinstance(exc, ModelShieldError) else "internal error"
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body={
            "error": type(exc).__name__,
            "message": message,
            **(exc.detail() if isinstance(exc, ModelShieldError) else {}),
        },
    )


def register_error_handlers(app: Any) -> None:
    app.exception_handler(ModelShieldError)(error_response)


def caller_arn(event: Any) -> str:
    """The IAM principal API Gateway authenticated (requestContext.identity.userArn)."""
    arn = event.request_context.identity.user_arn
    if not arn:
        raise AccessDenied("the request carries no IAM identity (the route must use AWS_IAM authorization)")
    return str(arn)
