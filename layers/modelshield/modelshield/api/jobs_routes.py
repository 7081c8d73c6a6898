"""Bulk jobs over HTTP: the same operations and JSON as `modelshield jobs ...`.

`POST /jobs` starts one (encrypt and rekey need the Security Engineer role), `GET /jobs` lists them,
`GET /jobs/{id}` is the status JSON, `GET /jobs/{id}/errors` the error report (JSON, or CSV with
`?format=csv`), `POST /jobs/{id}/cancel` and `POST /jobs/{id}/retry` (failed items only). The caller is
the IAM principal API Gateway authenticated, never a name in the body.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field

from modelshield.api import caller_arn, services
from modelshield.jobs.models import Filters, Operation, Options
from modelshield.jobs.service import JobService
from modelshield.jobs.settle import errors_csv

router = Router()


def _service() -> JobService:
    return services().jobs  # type: ignore[no-any-return]


class JobRequest(BaseModel):
    operation: Operation
    source: str  # s3://BUCKET/PREFIX, or an S3 Inventory manifest.json
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    min_size: int | None = None
    max_size: int | None = None
    dry_run: bool = False
    max_concurrency: int = Field(default=10, ge=1, le=10_000)
    tolerated_failure_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    rekey_older_than_days: int | None = Field(default=None, ge=0)


@router.post("/jobs")
def create_job(body: JobRequest) -> dict[str, Any]:
    job = _service().create(
        principal=caller_arn(router.current_event),
        operation=body.operation,
        source=body.source,
        filters=Filters(
            include=body.include, exclude=body.exclude, min_size=body.min_size, max_size=body.max_size
        ),
        options=Options(
            dry_run=body.dry_run,
            max_concurrency=body.max_concurrency,
            tolerated_failure_percent=body.tolerated_failure_percent,
            rekey_older_than_days=body.rekey_older_than_days,
        ),
    )
    return job.public()


@router.get("/jobs")
def list_jobs(limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return {"jobs": [j.public() for j in _service().list(limit)]}


@router.get("/jobs/<job_id>")
def job_status(job_id: str) -> dict[str, Any]:
    return _service().get(job_id).public()


@router.get("/jobs/<job_id>/errors")
def job_errors(job_id: str, format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Any:
    document = _service().errors(job_id)
    if format == "csv":
        return Response(status_code=200, content_type="text/csv", body=errors_csv(document))
    return document


@router.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> dict[str, Any]:
    return _service().cancel(job_id, principal=caller_arn(router.current_event)).public()


@router.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> dict[str, Any]:
    return _service().retry(job_id, principal=caller_arn(router.current_event)).public()
