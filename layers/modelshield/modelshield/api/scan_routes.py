"""Groups, verdicts and rescans over HTTP: the same operations as `modelshield groups|verdict|rescan`.

Reading is open to any IAM-authorised caller; changing a group or starting a rescan needs the Security
Engineer role (SECURITY_ENGINEER_ROLE), and both are audited.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import boto3
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel

from modelshield.access import matches_any, security_engineer_role_from_env
from modelshield.admin import apply_groups, request_rescan
from modelshield.api import caller_arn
from modelshield.errors import AccessDenied, ArtifactNotFound, ConfigError, UsageError
from modelshield.policy.groups import default_groups, load_groups
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.groups import GroupStore
from modelshield.store.scans import ScanStore

router = Router()


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set for the API function")
    return value


def _require_security_engineer() -> str:
    caller = caller_arn(router.current_event)
    pattern = security_engineer_role_from_env()
    if not pattern or not matches_any(caller, pattern):
        raise AccessDenied(
            f"{caller} is not in the Security Engineer role: only that role may change groups or rescan"
        )
    return caller


def _groups() -> list[Any]:
    stored = GroupStore(_env("GROUPS_TABLE")).list()
    return stored or default_groups(ingest_bucket=os.environ.get("INGEST_BUCKET"))


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


@router.put("/groups")
def put_groups(body: GroupsDocument) -> dict[str, Any]:
    caller = _require_security_engineer()
    groups = load_groups(body.yaml, ingest_bucket=os.environ.get("INGEST_BUCKET"))
    store = GroupStore(_env("GROUPS_TABLE"))
    return {"applied": apply_groups(store, groups, origin="the API", principal=caller)}


@router.get("/verdicts")
def latest_verdict(
    artifact_id: Annotated[str, Query(description="<ingest bucket>/<key>")],
    version_id: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    record = ScanStore(_env("SCANS_TABLE")).latest(artifact_id, version_id)
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
    request_id, states = request_rescan(
        groups=_groups(),
        artifacts=ArtifactStore(_env("ARTIFACTS_TABLE")).all(),
        sqs=boto3.client("sqs"),
        queue_url=_env("SCAN_QUEUE_URL"),
        group=body.group,
        principal=caller,
    )
    return {"request_id": request_id, "queued": len(states)}
