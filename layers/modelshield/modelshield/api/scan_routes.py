"""Groups, verdicts, rescans and the dead-letter queue over HTTP: the same operations as
`modelshield groups|verdict|rescan|dlq`.

Reading is open to any IAM-authorised caller; changing a group or starting a rescan needs the Security
Engineer role (SECURITY_ENGINEER_ROLE), and both are audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel

from modelshield import config, dlq
from modelshield.access import matches_any
from modelshield.admin import affected_artifacts, apply_groups, groups_after, plan_groups, request_rescan
from modelshield.api import caller_arn, services
from modelshield.errors import AccessDenied, ArtifactNotFound, UsageError
from modelshield.policy.groups import SecurityGroup, load_groups_with_lines
from modelshield.policy.preflight import preflight

router = Router()


def _require_security_engineer() -> str:
    caller = caller_arn(router.current_event)
    pattern = services().security_engineer
    if not pattern or not matches_any(caller, pattern):
        raise AccessDenied(
            f"{caller} is not in the Security Engineer role: only that role may change groups or rescan"
        )
    return caller


def _groups() -> list[SecurityGroup]:
    return services().groups.effective()


@router.get("/groups")
def list_groups() -> dict[str, Any]:
    return {"groups": [g.model_dump(mode="json") for g in _groups()]}


@router.get("/groups/<name>")
def show_group(name: str) -> dict[str, Any]:
    for group in _groups():
        if group.name == name:
            return group.model_dump(mode="json")
    raise ArtifactNotFound(f"no security group named {name!r}")


class GroupsDocument(BaseModel):
    yaml: str  # the same YAML `modelshield groups apply` takes
    dry_run: bool = False  # check and report what would change (and which artifacts); store nothing


@router.put("/groups")
def put_groups(body: GroupsDocument) -> dict[str, Any]:
    """`groups apply` over HTTP: validated, then checked against the stack (policy/preflight.py: keys exist
    and issue data keys, sources are free) before anything is stored; a refusal is a 400 listing each
    problem with its line, group and field."""
    caller = _require_security_engineer()
    api = services()
    store = api.groups
    origin = "groups document"
    # Always YAML text: a one-line body ending in .yaml is not a path to read on the server.
    groups, lines, _ = load_groups_with_lines(
        body.yaml + "\n", ingest_bucket=store.ingest_bucket, origin=origin
    )
    stored = store.list()
    warnings = [p.as_json() for p in preflight(groups, lines, origin, kms=api.kms, stored=stored)]
    if body.dry_run:
        changes = plan_groups(groups, stored)
        affected = affected_artifacts(store.effective(), groups_after(groups, stored), api.artifacts.all())
        return {
            "dry_run": True,
            "applied": [],
            "changes": changes,
            "affected": affected,
            "warnings": warnings,
        }
    applied = apply_groups(store, groups, origin="the API", audit=api.audit, principal=caller)
    return {"dry_run": False, "applied": applied, "changes": applied, "warnings": warnings}


@router.get("/verdicts")
def latest_verdict(
    artifact_id: Annotated[str, Query(description="<ingest bucket>/<key>")],
    version_id: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    record = services().scans.latest(artifact_id, version_id)
    if record is None:
        raise ArtifactNotFound(f"no scan recorded for s3://{artifact_id}")
    return record.model_dump(mode="json")


class RescanRequest(BaseModel):
    group: str | None = None
    all: bool = False


@router.post("/rescans")
def start_rescan(body: RescanRequest) -> dict[str, Any]:
    caller = _require_security_engineer()
    if bool(body.group) == body.all:
        raise UsageError("give exactly one of 'group' or 'all': true")
    api = services()
    request_id, states = request_rescan(
        groups=_groups(),
        artifacts=api.artifacts.all(),
        sqs=api.sqs,
        queue_url=api.settings.rescan_queue_url,
        group=body.group,
        audit=api.audit,
        principal=caller,
    )
    return {"request_id": request_id, "queued": len(states)}


@router.get("/dlq")
def list_dead_letters(limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> dict[str, Any]:
    """The scan events that failed every attempt (each has an ERROR verdict saying why)."""
    settings = config.load(config.DlqSettings)
    letters = dlq.list_dead_letters(services().sqs, settings.dead_letter_queue_url, limit=limit)
    return {"dead_letters": dlq.as_json(letters)}


class RedriveRequest(BaseModel):
    limit: int | None = None


@router.post("/dlq/redrive")
def redrive_dead_letters(body: RedriveRequest) -> dict[str, Any]:
    """Send dead-lettered scan events back to the scan queue (after the cause is fixed)."""
    _require_security_engineer()
    settings = config.load(config.DlqSettings)
    moved = dlq.redrive(
        services().sqs,
        settings.dead_letter_queue_url,
        settings.scan_queue_url,
        rescan_queue_url=settings.rescan_queue_url,
        limit=body.limit,
    )
    return {"redriven": dlq.as_json(moved), "count": len(moved)}
