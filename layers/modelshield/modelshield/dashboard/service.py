"""The dashboard's data: one object answering every route, built from settings and AWS clients.

Everything here reads; nothing writes (the DashboardFunction role in template.yaml has no write action).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from modelshield.config import DashboardSettings
from modelshield.dashboard.attempts import AttemptFilter, attempts_page, quarantine_page
from modelshield.dashboard.metrics import MetricsSources, build_metrics
from modelshield.errors import ArtifactNotFound
from modelshield.models import EncryptionState
from modelshield.store.audit import DynamoAuditStore
from modelshield.store.metrics import MetricsStore

MAX_BATCH_GET = 100  # DynamoDB's BatchGetItem limit
MAX_JOBS = 20  # the page shows the newest jobs; `modelshield jobs list` has them all


@dataclass(frozen=True)
class _KeyUse:
    """The three fields `keys.key_status` reads from an artifact: one per key in use (from counters)."""

    wrapping_key_arn: str
    data_key_created_at: datetime | None
    encryption_state: EncryptionState = EncryptionState.ENCRYPTED


class Dashboard:
    def __init__(self, settings: DashboardSettings, *, dynamodb: Any, kms: Any) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.kms = kms
        self.metrics_store = MetricsStore(settings.metrics_table, dynamodb)
        self.audit = DynamoAuditStore(settings.audit_table, dynamodb)
        self.audit_table = dynamodb.Table(settings.audit_table)
        self.artifacts_table = dynamodb.Table(settings.artifacts_table)

    # -- routes ------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        return build_metrics(
            MetricsSources(
                metrics=self.metrics_store,
                chain_head=self.audit.head,
                chain_records_after=lambda seq, limit: islice(self.audit.records(after_seq=seq), limit),
                key_report=self._key_report,
                jobs=self.jobs,
            )
        )

    def attempts(
        self,
        *,
        outcome: str | None = None,
        principal: str | None = None,
        artifact: str | None = None,
        cursor: str | None = None,
        limit: int = 25,
    ) -> dict[str, Any]:
        return attempts_page(
            self.audit_table,
            filters=AttemptFilter.parse(outcome, principal, artifact),
            cursor=cursor,
            limit=limit,
            approvers=self._approvers,
        )

    def quarantine(self, *, cursor: str | None = None, limit: int = 25) -> dict[str, Any]:
        return quarantine_page(self.artifacts_table, self._scans, cursor=cursor, limit=limit)

    def verdict(self, artifact_id: str, version_id: str | None) -> dict[str, Any]:
        from modelshield.store.scans import ScanStore

        record = ScanStore(self.settings.scans_table, self.dynamodb).latest(artifact_id, version_id or None)
        if record is None:
            raise ArtifactNotFound(
                f"no scan recorded for {artifact_id}" + (f" version {version_id}" if version_id else "")
            )
        return record.model_dump(mode="json")

    def jobs(self) -> list[dict[str, Any]]:
        """The newest bulk jobs (their table's JobsByCreation index), with progress for the page."""
        if not self.settings.jobs_table:
            return []
        from modelshield.jobs.store import JobStore

        rows = []
        for job in JobStore(self.settings.jobs_table, self.dynamodb).list(limit=MAX_JOBS):
            public = job.public()
            counts = public["counts"]
            done = (
                int(counts.get("succeeded", 0)) + int(counts.get("failed", 0)) + int(counts.get("skipped", 0))
            )
            left = {"objects": job.plaintext_objects, "bytes": job.plaintext_bytes}  # settle's recount
            rows.append({**public, "done": done, "total": int(counts.get("total", 0)),
                         "failed": int(counts.get("failed", 0)), "plaintext": left})  # fmt: skip
        return rows

    def job_errors(self, job_id: str) -> dict[str, Any]:
        """The job's error report (the page's details link), as `modelshield jobs errors` prints it."""
        if not self.settings.jobs_table:
            raise ArtifactNotFound(f"no job {job_id!r}: this stack records no bulk jobs")
        from modelshield.jobs.settle import errors_document
        from modelshield.jobs.store import JobStore

        store = JobStore(self.settings.jobs_table, self.dynamodb)
        store.get(job_id)  # ArtifactNotFound for an unknown job
        return errors_document(job_id, list(store.items(job_id)))

    # -- helpers -------------------------------------------------------------------------------------
    def _key_report(self, uses: dict[str, tuple[int, datetime | None]]) -> list[Any]:
        from modelshield.keys import key_status
        from modelshield.store.groups import GroupStore

        source = self.settings.groups
        groups = GroupStore(source.table, self.dynamodb, ingest_bucket=source.ingest_bucket).effective()
        return key_status(
            kms=self.kms,
            groups=groups,
            default_key_id=self.settings.kms_key_id,
            artifacts=[_KeyUse(arn, oldest) for arn, (_, oldest) in uses.items()],  # type: ignore[misc]
        )

    def _batch_get(self, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(keys), MAX_BATCH_GET):
            pending: dict[str, Any] = {table: {"Keys": keys[start : start + MAX_BATCH_GET]}}
            while pending:
                response = self.dynamodb.batch_get_item(RequestItems=pending)
                out.extend(response.get("Responses", {}).get(table, []))
                pending = response.get("UnprocessedKeys") or {}
        return out

    def _approvers(self, request_ids: list[str]) -> dict[str, str]:
        items = self._batch_get(self.settings.access_table, [{"request_id": r} for r in request_ids])
        return {str(i["request_id"]): str(i.get("decided_by") or "") for i in items}

    def _scans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        unique = sorted(set(keys))
        items = self._batch_get(
            self.settings.scans_table, [{"artifact_id": a, "scan_ref": s} for a, s in unique]
        )
        return {(str(i["artifact_id"]), str(i["scan_ref"])): i for i in items}
