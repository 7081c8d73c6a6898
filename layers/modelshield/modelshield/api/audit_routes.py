"""Audit routes: list records with filters, and verify the hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from modelshield.api import services
from modelshield.audit import AuditQuery, ChainHead, Decision, verify_against_latest_anchor

router = Router()


@router.get("/audit")
def list_audit(
    artifact_id: Annotated[str | None, Query()] = None,
    principal: Annotated[str | None, Query()] = None,
    action: Annotated[str | None, Query()] = None,
    decision: Annotated[Decision | None, Query()] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    query = AuditQuery(
        artifact_id=artifact_id,
        principal=principal,
        action=action,
        decision=decision,
        since=since,
        until=until,
        limit=limit,
    )
    return {"records": [r.model_dump(mode="json") for r in services().audit.list(query)]}


@router.get("/audit/verify")
def verify_audit(
    anchor_seq: Annotated[int | None, Query(ge=1)] = None,
    anchor_hash: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
) -> dict[str, Any]:
    anchor = ChainHead(anchor_seq, anchor_hash) if anchor_seq and anchor_hash else None
    return verify_against_latest_anchor(services().audit, services().anchors, anchor=anchor).to_json()
