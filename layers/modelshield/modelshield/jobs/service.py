"""Start, read, cancel and retry bulk jobs: what the API routes and the CLI both call.

Authority comes from the caller's verified identity (the API's IAM context, or STS for the CLI): an
`encrypt` or `rekey` job rewrites repository objects, so only the Security Engineer role may start,
cancel or retry one. Starts, retries and cancels are appended to the audit chain before anything runs.
Only buckets the stack was given as repositories (template parameter `RepositoryBuckets`) are accepted.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from dataclasses import dataclass
from typing import Any

from modelshield.access import matches_any
from modelshield.audit import AuditAction, AuditLog, Decision
from modelshield.errors import AccessDenied, JobConflict, UsageError
from modelshield.jobs.discover import manifest_key, write_manifest
from modelshield.jobs.models import (
    FINISHED,
    Filters,
    Job,
    JobStatus,
    ManifestEntry,
    Operation,
    Options,
    Outcome,
    Source,
)
from modelshield.jobs.settle import errors_document
from modelshield.jobs.store import JobStore
from modelshield.models import utcnow


@dataclass
class JobService:
    store: JobStore
    sfn: Any
    s3: Any
    state_machine_arn: str
    reports_bucket: str
    audit: AuditLog
    security_engineer_role: str | None
    repository_buckets: list[str]  # bucket names or globs; ["*"] on the local stack

    # -- start ------------------------------------------------------------------------------------
    def create(
        self,
        *,
        principal: str,
        operation: Operation | str,
        source: str,
        filters: Filters | None = None,
        options: Options | None = None,
    ) -> Job:
        operation = Operation(operation)
        parsed = Source.parse(source)
        self._check_bucket(parsed.bucket)
        self._authorize(principal, operation, "start")
        job = Job(
            job_id=f"job-{utcnow().strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}",
            operation=operation,
            source=parsed,
            filters=filters or Filters(),
            options=options or Options(),
            requester=principal,
            created_at=utcnow(),
        )
        self._audit(AuditAction.JOB_START, job, principal, "start")
        self.store.create(job)
        return self._start(job, attempt=1, manifest=None)

    def retry(self, job_id: str, *, principal: str) -> Job:
        """Run the job's FAILED items again (quarantined, skipped and done items stay as they are)."""
        job = self.store.get(job_id)
        self._authorize(principal, job.operation, "retry")
        if job.status not in FINISHED:
            raise JobConflict(f"job {job_id} is {job.status.value}: retry it once it has finished")
        failed = [i for i in self.store.items(job_id) if i.outcome is Outcome.FAILED]
        if not failed:
            raise UsageError(f"job {job_id} has no failed items to retry")
        attempt = len(job.executions) + 1
        key = manifest_key(job_id, attempt)
        entries = [ManifestEntry(bucket=i.bucket, key=i.key, size=i.size) for i in failed]
        write_manifest(self.s3, self.reports_bucket, key, entries)
        self._audit(AuditAction.JOB_START, job, principal, "retry", items=len(entries))
        job = self.store.update(job_id, status=JobStatus.RUNNING, finished_at=None, message="")
        return self._start(job, attempt=attempt, manifest={"bucket": self.reports_bucket, "key": key})

    def _start(self, job: Job, *, attempt: int, manifest: dict[str, str] | None) -> Job:
        payload: dict[str, Any] = {
            "job_id": job.job_id,
            "attempt": attempt,
            "max_concurrency": job.options.max_concurrency,
            "tolerated_failure_percent": float(job.options.tolerated_failure_percent),
        }
        if manifest:
            payload["manifest"] = manifest
        execution = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=f"{job.job_id}-{attempt}", input=json.dumps(payload)
        )["executionArn"]
        return self.store.update(job.job_id, execution_arn=execution, executions=[*job.executions, execution])

    # -- read -------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, limit: int = 50) -> list[Job]:
        return self.store.list(limit)

    def errors(self, job_id: str) -> dict[str, Any]:
        self.store.get(job_id)  # 404 for an unknown job
        return errors_document(job_id, list(self.store.items(job_id)))

    # -- cancel -----------------------------------------------------------------------------------
    def cancel(self, job_id: str, *, principal: str) -> Job:
        """Stop new items: workers skip what they have not started; the settle step ends it CANCELLED."""
        job = self.store.get(job_id)
        self._authorize(principal, job.operation, "cancel")
        if job.status in FINISHED:
            raise JobConflict(f"job {job_id} already finished ({job.status.value})")
        self._audit(AuditAction.JOB_CANCEL, job, principal, "cancel")
        self.store.set_status(
            job_id,
            JobStatus.CANCELLING,
            only_from={JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLING},
        )
        return self.store.get(job_id)

    # -- checks -----------------------------------------------------------------------------------
    def _check_bucket(self, bucket: str) -> None:
        if not any(fnmatch.fnmatchcase(bucket, allowed) for allowed in self.repository_buckets):
            raise AccessDenied(
                f"bucket {bucket} is not one of this stack's repositories "
                f"({', '.join(self.repository_buckets) or 'none'}): add it to the RepositoryBuckets parameter"
            )

    def _authorize(self, principal: str, operation: Operation, verb: str) -> None:
        if not principal:
            raise AccessDenied("the caller's identity is unknown")
        if operation.changes_objects:
            pattern = self.security_engineer_role
            if not pattern or not matches_any(principal, pattern):
                raise AccessDenied(
                    f"{principal} is not in the Security Engineer role: only that role may {verb} "
                    f"an {operation.value} job (it rewrites repository objects)"
                )

    def _audit(self, action: AuditAction, job: Job, principal: str, verb: str, **extra: Any) -> None:
        self.audit.append(
            action,
            principal=principal,
            decision=Decision.ALLOWED,
            reason=f"{verb} {job.operation.value} job over {job.source.uri}",
            detail={
                "job_id": job.job_id,
                "operation": job.operation.value,
                "source": job.source.uri,
                "dry_run": job.options.dry_run,
                **extra,
            },
            idempotency_key=f"job:{verb}:{job.job_id}:{len(job.executions)}",
        )
