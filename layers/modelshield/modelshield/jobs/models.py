"""Bulk jobs as records: a Job (what, where, how, its status and counts) and one JobItem per object.

ModelShield's own tables are the source of truth for a job's status and counts, not the engine's:
Step Functions only schedules work. The names here (operations, statuses, outcomes) are the CLI and API
contract of issue 12, so they never change.
"""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from modelshield.errors import UsageError


class Operation(StrEnum):
    SCAN = "scan"  # a verdict for every artifact under its group, nothing changed
    ENCRYPT = "encrypt"  # in place: ciphertext as a new version, plaintext removed once verified
    REKEY = "rekey"  # re-wrap under the current key, or re-key data keys older than N days
    VERIFY = "verify"  # authenticate every encrypted artifact without publishing plaintext

    @property
    def changes_objects(self) -> bool:
        """Operations that rewrite repository objects: only a Security Engineer may start them."""
        return self in (Operation.ENCRYPT, Operation.REKEY)


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    COMPLETED_WITH_FAILURES = "COMPLETED_WITH_FAILURES"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.COMPLETED_WITH_FAILURES, JobStatus.FAILED, JobStatus.CANCELLED}
)


class Outcome(StrEnum):
    ENCRYPTED = "ENCRYPTED"
    QUARANTINED = "QUARANTINED"
    ALREADY_ENCRYPTED = "ALREADY_ENCRYPTED"
    NOT_A_MODEL = "NOT_A_MODEL"
    VERIFIED = "VERIFIED"
    REKEYED = "REKEYED"
    SCANNED = "SCANNED"
    GONE = "GONE"
    FAILED = "FAILED"


class Tally(StrEnum):
    """Which job count an item lands in."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


SKIPPED_OUTCOMES = frozenset({Outcome.ALREADY_ENCRYPTED, Outcome.NOT_A_MODEL, Outcome.GONE})
# A quarantined model is handled as designed, but someone must look at it: it counts as a failure, so
# `jobs create --wait` exits 1 and `jobs errors` lists it with its findings.
FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.QUARANTINED})


class Source(BaseModel):
    """Where the objects are: a bucket and prefix, or an S3 Inventory manifest (manifest.json)."""

    bucket: str
    prefix: str = ""
    inventory: bool = False  # `prefix` is the key of an S3 Inventory manifest.json

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def parse(cls, uri: str) -> Source:
        if not uri.startswith("s3://"):
            raise UsageError(
                f"--source must be s3://BUCKET/PREFIX (or an S3 Inventory manifest.json), got {uri!r}"
            )
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise UsageError(f"--source {uri!r} names no bucket")
        return cls(bucket=bucket, prefix=prefix, inventory=prefix.endswith("manifest.json"))


class Filters(BaseModel):
    """Which listed objects are candidates: globs on the key (whole or under the prefix), size bounds."""

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    min_size: int | None = None
    max_size: int | None = None

    def accepts(self, key: str, size: int, prefix: str = "") -> bool:
        relative = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        names = (key, relative, relative.rsplit("/", 1)[-1])

        def hit(globs: list[str]) -> bool:
            return any(fnmatch.fnmatchcase(name, glob) for glob in globs for name in names)

        if self.include and not hit(self.include):
            return False
        if self.exclude and hit(self.exclude):
            return False
        if self.min_size is not None and size < self.min_size:
            return False
        return not (self.max_size is not None and size > self.max_size)


class Options(BaseModel):
    dry_run: bool = False
    max_concurrency: int = Field(default=10, ge=1, le=10_000)
    tolerated_failure_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    rekey_older_than_days: int | None = Field(default=None, ge=0)  # rekey: re-key data keys older than N days

    @field_validator("tolerated_failure_percent", mode="before")
    @classmethod
    def _as_float(cls, value: Any) -> float:
        return float(value)  # Step Functions (and moto's interpreter) want a float here


class Counts(BaseModel):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0


class ByteCounts(BaseModel):
    total: int = 0
    processed: int = 0


class Job(BaseModel):
    job_id: str
    operation: Operation
    source: Source
    filters: Filters = Field(default_factory=Filters)
    options: Options = Field(default_factory=Options)
    requester: str
    status: JobStatus = JobStatus.PENDING
    counts: Counts = Field(default_factory=Counts)
    bytes: ByteCounts = Field(default_factory=ByteCounts)
    outcomes: dict[str, int] = Field(default_factory=dict)  # per Outcome, for the table view and reports
    # Plaintext models this job saw and left in plaintext (settle's recount; the dashboard's repository tile)
    plaintext_objects: int = 0
    plaintext_bytes: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution_arn: str | None = None
    executions: list[str] = Field(default_factory=list)  # every run (the first, then retries)
    manifest_uri: str | None = None
    report_uri: str | None = None
    message: str = ""  # why the job FAILED, when it did
    revision: int = 1

    def public(self) -> dict[str, Any]:
        """The contract JSON of `jobs status --format json` (and `create --wait --format json`)."""
        return {
            "job_id": self.job_id,
            "operation": self.operation.value,
            "source": self.source.uri,
            "status": self.status.value,
            "counts": self.counts.model_dump(),
            "bytes": self.bytes.model_dump(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "report_uri": self.report_uri,
        }


class ManifestEntry(BaseModel):
    """One object as the discover step saw it; the Distributed Map hands these to the worker."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int = 0
    etag: str | None = None
    sniffed: bool = False  # content already sniffed as a model candidate by discover


class JobItem(BaseModel):
    job_id: str
    bucket: str
    key: str
    version_id: str | None = None
    size: int = 0
    outcome: Outcome
    tally: Tally
    code: str = ""  # error code for failures (e.g. INTEGRITY, BLOCKED, NOT_ENCRYPTED, THROTTLED)
    message: str = ""
    action: str = ""  # what to do about it
    scan_id: str | None = None
    verdict: str | None = None
    new_version_id: str | None = None
    bytes_processed: int = 0
    dry_run: bool = False
    attempt: int = 1
    updated_at: datetime

    @property
    def item_id(self) -> str:
        return item_id(self.bucket, self.key)

    def error_row(self) -> dict[str, Any]:
        """One entry of `jobs errors` (JSON) and of the error report (JSON and CSV)."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "code": self.code or self.outcome.value,
            "message": self.message,
            "action": self.action,
        }


ERROR_FIELDS = ("bucket", "key", "version_id", "code", "message", "action")


def item_id(bucket: str, key: str) -> str:
    """Stable per object (S3 keys can be 1,024 bytes, more than a DynamoDB sort key should carry)."""
    return hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:32]


def tally_of(outcome: Outcome) -> Tally:
    if outcome in FAILED_OUTCOMES:
        return Tally.FAILED
    if outcome in SKIPPED_OUTCOMES:
        return Tally.SKIPPED
    return Tally.SUCCEEDED


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
