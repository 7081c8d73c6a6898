"""Access-request routes: request, list, show, approve, deny, and the decrypt-time authorization (with
its error report). The caller is always the IAM identity."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ConfigDict, Field

from modelshield.access import MAX_ACCESS_HOURS, MAX_REASON_CHARS
from modelshield.api import caller_arn, services
from modelshield.models import RequestStatus

router = Router()


class AccessRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact_id: str = Field(min_length=1, max_length=2048)
    version_id: str | None = Field(default=None, max_length=1024)
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    hours: int = Field(ge=1, le=MAX_ACCESS_HOURS)


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


@router.post("/access/requests")
def create_request(body: AccessRequestBody) -> Response[dict[str, Any]]:
    request = services().access.request(
        body.artifact_id,
        version_id=body.version_id,
        requester=caller_arn(router.current_event),
        reason=body.reason,
        hours=body.hours,
    )
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=request.public())


@router.get("/access/requests")
def list_requests(
    status: Annotated[RequestStatus | None, Query()] = None,
    artifact_id: Annotated[str | None, Query()] = None,
    requester: Annotated[str | None, Query()] = None,
    mine: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    if mine:  # the caller's own requests: the identity API Gateway verified, never a name in the query
        requester = caller_arn(router.current_event)
    requests = services().access.list(status=status, artifact_id=artifact_id, requester=requester)
    return {"requests": [r.public() for r in requests]}


@router.get("/access/requests/<request_id>")
def show_request(request_id: str) -> dict[str, Any]:
    return services().access.get(request_id).public()


@router.post("/access/requests/<request_id>/approve")
def approve_request(request_id: str, body: DecisionBody) -> dict[str, Any]:
    approved = services().access.approve(
        request_id, approver=caller_arn(router.current_event), reason=body.reason
    )
    return approved.public()


@router.post("/access/requests/<request_id>/deny")
def deny_request(request_id: str, body: DecisionBody) -> dict[str, Any]:
    denied = services().access.deny(request_id, approver=caller_arn(router.current_event), reason=body.reason)
    return denied.public()


class DecryptErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)


@router.post("/access/requests/<request_id>/authorize-decrypt")
def authorize_decrypt(request_id: str) -> dict[str, Any]:
    """The decrypt-time checks, run here under the API's role for the signing identity (never in the
    caller's process, whose environment and table access prove nothing). Only the grantee gets the
    grant token back; the decision, either way, is in the audit chain before this returns."""
    authorization = services().access.authorize_decrypt(
        request_id, principal=caller_arn(router.current_event)
    )
    return authorization.model_dump(mode="json")


@router.post("/access/requests/<request_id>/decrypt-error")
def report_decrypt_error(request_id: str, body: DecryptErrorBody) -> Response[dict[str, Any]]:
    services().access.record_decrypt_error(
        request_id, principal=caller_arn(router.current_event), reason=body.reason
    )
    return Response(status_code=204, content_type=content_types.APPLICATION_JSON, body={})
