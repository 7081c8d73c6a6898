"""Settings from the environment: the only module that reads (or writes) `os.environ`.

Each function has one settings model (`ScanSettings`, `RotateSettings`, `ApiSettings`, `AuditSettings`,
`MetricsSettings`, `DashboardSettings`)
composed from small shared parts (`Tables`, `Buckets`, `GroupsSource`, `AccessSettings`, ...). A field
names its environment variable with `env(...)`; `load(Model)` reads every variable the model (and its
parts) name and validates them once, so a missing or malformed variable is one clear line naming it:
`environment variable SCANS_TABLE is not set (the scans table name): ...`. Empty values count as unset.

Adding a setting: give it a field with `env("NAME", "what it is")` in the model of the function that
needs it (or in a shared part); `modelshield.wiring` then builds the service from the validated model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelshield.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

HINT = "export it (e.g. `eval $(modelshield local env)` for the local stack)"


def env(name: str, description: str, default: Any = ...) -> Any:
    """A settings field read from environment variable `name`."""
    return Field(default, validation_alias=name, description=description)


class EnvModel(BaseModel):
    """A settings model: immutable, fields filled from the environment by `load`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


def _part(annotation: Any) -> type[BaseModel] | None:
    """The settings part a field holds (a nested model, possibly Optional), or None for a plain value."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _values(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        part = _part(field.annotation)
        if part is not None:
            values[name] = _values(part, environ)
        elif isinstance(field.validation_alias, str) and environ.get(field.validation_alias, "") != "":
            values[name] = environ[field.validation_alias]
    return values


def _describe(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, str]:
    """(ENV_NAME, description) of the field an error location points at."""
    current: type[BaseModel] | None = model
    name, description = ".".join(str(p) for p in loc), ""
    for step in loc:
        if current is None or str(step) not in current.model_fields:
            break
        field = current.model_fields[str(step)]
        if isinstance(field.validation_alias, str):
            name, description = field.validation_alias, field.description or ""
        current = _part(field.annotation)
    return name, description


def load(model: type[M], environ: Mapping[str, str] | None = None) -> M:
    """Validate `model` from the environment; ConfigError (one line, naming the variables) otherwise."""
    source = os.environ if environ is None else environ
    try:
        return model.model_validate(_values(model, source))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name, description = _describe(model, tuple(error["loc"]))
            what = f" ({description})" if description else ""
            if error["type"] == "missing":
                problems.append(f"environment variable {name} is not set{what}")
            else:
                problems.append(f"environment variable {name}{what} is invalid: {error['msg']}")
        raise ConfigError("; ".join(problems) + f": {HINT}") from None


# -- shared parts -----------------------------------------------------------------------------------
class Tables(EnvModel):
    """The tables the scan pipeline writes."""

    scans: str = env("SCANS_TABLE", "the scans table name")
    artifacts: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    idempotency: str = env("IDEMPOTENCY_TABLE", "the idempotency table name")
    groups: str = env("GROUPS_TABLE", "the groups table name")


class Buckets(EnvModel):
    ingest: str = env("INGEST_BUCKET", "the ingest bucket name")
    vault: str = env("VAULT_BUCKET", "the vault bucket name")


class GroupsSource(EnvModel):
    """Where security groups come from: the groups table, or the built-in defaults when it is empty."""

    table: str = env("GROUPS_TABLE", "the groups table name")
    ingest_bucket: str | None = env("INGEST_BUCKET", "the bucket ${IngestBucket} stands for", None)


class OptionalGroupsSource(EnvModel):
    """As GroupsSource, for commands that may run without a groups table (the built-in defaults then)."""

    table: str | None = env("GROUPS_TABLE", "the groups table name", None)
    ingest_bucket: str | None = env("INGEST_BUCKET", "the bucket ${IngestBucket} stands for", None)


class AuditSettings(EnvModel):
    """AuditFunction (and every writer of the audit log): the hash-chained audit table."""

    audit_table: str = env("AUDIT_TABLE", "the audit table name")


class OptionalAudit(EnvModel):
    audit_table: str | None = env("AUDIT_TABLE", "the audit table name", None)


class SecurityEngineer(EnvModel):
    """Who approves decryption: named by the stack (an SSM parameter it owns), never by the caller.

    `parameter` (SECURITY_ENGINEER_PARAMETER, set by the template and by `local env`) names the stack's
    setting; when it is set, a SECURITY_ENGINEER_ROLE variable is ignored. `role` remains for tests and
    embedders that build the service without a stack."""

    parameter: str | None = env(
        "SECURITY_ENGINEER_PARAMETER", "the stack's SSM parameter holding the Security Engineer role", None
    )
    role: str | None = env(
        "SECURITY_ENGINEER_ROLE", "comma-separated ARN patterns of the Security Engineer role", None
    )


class AccessSettings(EnvModel):
    """The access-request service: requests, grants and their audit records."""

    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    access_table: str = env("ACCESS_TABLE", "the access-requests table name")
    audit_table: str = env("AUDIT_TABLE", "the audit table name")
    # Releases are checked against the append-only scans; without them every release is refused.
    scans_table: str | None = env("SCANS_TABLE", "the scans table name", None)
    scan_record_key: str | None = env(
        "SCAN_RECORD_KEY_ID", "the KMS HMAC key that seals scan records (store/seal.py)", None
    )
    security_engineer: SecurityEngineer = SecurityEngineer()
    grant_retiring_principal: str | None = env(
        "GRANT_RETIRING_PRINCIPAL", "the principal allowed to retire grants", None
    )


# -- one model per function -------------------------------------------------------------------------
class ScanSettings(EnvModel):
    """ScanFunction: where artifacts come from and go, which key protects them, and scan limits."""

    tables: Tables
    buckets: Buckets
    kms_key_id: str = env("KMS_KEY_ID", "the vault's KMS key alias or ARN")
    scan_record_key: str | None = env(
        "SCAN_RECORD_KEY_ID", "the KMS HMAC key that seals scan records (store/seal.py)", None
    )
    quarantine_prefix: str = "quarantine/"
    frame_length: int = env("FRAME_LENGTH", "envelope frame length in bytes", 4 * 1024 * 1024)
    scan_timeout_seconds: float = env("SCAN_TIMEOUT_SECONDS", "time limit of one scan", 600.0)
    workdir: str = env("WORKDIR", "ephemeral storage for downloads", "/tmp")  # noqa: S108 - Lambda's /tmp
    verdict_event_bus: str | None = env(
        "VERDICT_EVENT_BUS", "EventBridge bus every recorded verdict is published on", None
    )
    # The scan queue's maxReceiveCount: the attempt that reaches it records an ERROR verdict before the
    # message moves to the dead-letter queue (template.yaml passes the same number to both).
    max_receive_count: int = env("MAX_RECEIVE_COUNT", "the scan queue's maxReceiveCount", 3)
    lease_wait_seconds: float = 60.0  # how long a version waits for another version of its key
    stale_work_seconds: float = 1800.0  # work files older than this (and not in use) are swept
    # Objects that do not fit in ephemeral storage are scanned by ranged reads and encrypted by parallel
    # ranges (modelshield.large_objects) up to this size; larger ones get an ERROR verdict saying so.
    max_ranged_bytes: int = env("MAX_RANGED_BYTES", "largest artifact scanned by ranged reads", 100 * 1024**3)
    range_workers: int = env("RANGE_WORKERS", "parallel ranged reads/encryptions per large artifact", 8)
    audit_table: str | None = env("AUDIT_TABLE", "the audit table (plaintext removals, forged tags)", None)
    retention_table: str | None = env("RETENTION_TABLE", "the plaintext retention table", None)
    # Off only for test suites that inspect upload versions after their verdict (tests/faults); the
    # template never sets it, so a deployed stack always removes plaintext once its copy is recorded.
    remove_plaintext: bool = env("REMOVE_PLAINTEXT", "remove uploads once their vault copy is recorded", True)


class RotateSettings(EnvModel):
    """RotateFunction and `modelshield keys rotate`: the artifacts to rotate and where runs are recorded."""

    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    audit_table: str = env("AUDIT_TABLE", "the audit table name")
    kms_key_id: str = env("KMS_KEY_ID", "the stack's default KMS key alias or ARN")
    access_table: str | None = env("ACCESS_TABLE", "the access-requests table (grants to retire)", None)
    scans_table: str | None = env("SCANS_TABLE", "the scans table name", None)
    idempotency_table: str | None = env(
        "IDEMPOTENCY_TABLE",
        "where the per-artifact leases live (the scan pipeline's idempotency table)",
        None,
    )
    scan_record_key: str | None = env(
        "SCAN_RECORD_KEY_ID", "the KMS HMAC key that seals scan records (store/seal.py)", None
    )
    security_engineer: SecurityEngineer = SecurityEngineer()
    grant_retiring_principal: str | None = env(
        "GRANT_RETIRING_PRINCIPAL", "the principal allowed to retire grants", None
    )
    groups: OptionalGroupsSource = OptionalGroupsSource()
    margin_ms: int = env("ROTATION_MARGIN_MS", "stop when less than this remains", 60_000)
    keep_old_versions: bool = env("ROTATION_KEEP_OLD_VERSIONS", "keep superseded vault versions", False)
    workdir: str = env("WORKDIR", "ephemeral storage for re-keying", tempfile.gettempdir())

    @property
    def access(self) -> AccessSettings | None:
        """The access service's settings when the run also retires and moves grants (ACCESS_TABLE set)."""
        if not self.access_table:
            return None
        return AccessSettings(
            artifacts_table=self.artifacts_table,
            access_table=self.access_table,
            audit_table=self.audit_table,
            scans_table=self.scans_table,
            scan_record_key=self.scan_record_key,
            security_engineer=self.security_engineer,
            grant_retiring_principal=self.grant_retiring_principal,
        )


class KeysSettings(EnvModel):
    """`modelshield keys status`: the artifacts and the default key to report on."""

    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    kms_key_id: str = env("KMS_KEY_ID", "the stack's default KMS key alias or ARN")
    groups: OptionalGroupsSource = OptionalGroupsSource()


class ApiSettings(EnvModel):
    """ApiFunction: groups, verdicts, rescans, access requests and the audit log."""

    groups: GroupsSource
    scans_table: str = env("SCANS_TABLE", "the scans table name")
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    rescan_queue_url: str = env("RESCAN_QUEUE_URL", "the rescan queue URL (the RescanFunction's)")
    security_engineer: SecurityEngineer = SecurityEngineer()


class RescanSettings(EnvModel):
    """`modelshield rescan`: where rescans are queued and which artifacts they cover."""

    groups: GroupsSource
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    rescan_queue_url: str = env("RESCAN_QUEUE_URL", "the rescan queue URL (the RescanFunction's)")


class JobSettings(EnvModel):
    """Bulk jobs (JobWorkerFunction, the jobs API, the CLI): jobs table, reports, engine, repositories."""

    table: str = env("JOBS_TABLE", "the jobs table name")
    reports_bucket: str = env("REPORTS_BUCKET", "the bucket for job manifests and error reports")
    state_machine_arn: str = env("JOBS_STATE_MACHINE_ARN", "the jobs state machine ARN", "")
    repository_buckets: str = env(
        "REPOSITORY_BUCKETS", "comma-separated bucket names or globs jobs may touch (`*` locally)", ""
    )
    audit_table: str | None = env("AUDIT_TABLE", "the audit table name", None)
    security_engineer: SecurityEngineer = SecurityEngineer()

    @property
    def repositories(self) -> list[str]:
        return [b.strip() for b in self.repository_buckets.split(",") if b.strip()]


class DlqSettings(EnvModel):
    """`modelshield dlq list|redrive` and the API's /dlq routes: the scan queue and its dead-letter queue."""

    scan_queue_url: str = env("SCAN_QUEUE_URL", "the scan queue URL (uploads are redriven there)")
    rescan_queue_url: str = env(
        "RESCAN_QUEUE_URL", "the rescan queue URL (rescans are redriven there; default: the scan queue)", ""
    )
    dead_letter_queue_url: str = env("SCAN_DEAD_LETTER_QUEUE_URL", "the scan queue's dead-letter queue URL")


class StackTarget(EnvModel):
    """The stack the CLI talks to (a deployed stack's names, or `eval $(modelshield local env)`)."""

    ingest_bucket: str = env("INGEST_BUCKET", "the ingest bucket name", "")
    vault_bucket: str = env("VAULT_BUCKET", "the vault bucket name", "")
    scans_table: str = env("SCANS_TABLE", "the scans table name", "")
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name", "")


class AwsEndpoint(EnvModel):
    """Where boto3 sends requests: AWS, or the endpoint AWS_ENDPOINT_URL names (the local stack)."""

    url: str | None = env("AWS_ENDPOINT_URL", "one endpoint for all AWS services (the local stack)", None)


class LocalSettings(EnvModel):
    """The local stack: where its state and template live, and whether the caller chose AWS instead."""

    template: str | None = env("MODELSHIELD_TEMPLATE", "path of template.yaml", None)
    state_dir: str = env("MODELSHIELD_STATE_DIR", "local stack state", str(Path.home() / ".modelshield"))
    target: str | None = env("MODELSHIELD_TARGET", "`aws` to ignore a running local stack", None)
    ingest_bucket: str | None = env("INGEST_BUCKET", "the ingest bucket name", None)
    access_key_id: str | None = env(
        "AWS_ACCESS_KEY_ID", "credentials the caller chose (e.g. from `modelshield local assume`)", None
    )
    snapshot_seconds: float = env(
        "MODELSHIELD_SNAPSHOT_SECONDS", "how often `local up` saves moto's state to the state dir", 2.0
    )


class SweepSettings(EnvModel):
    """PlaintextSweepFunction: removals due in the retention table, checked against the artifacts table."""

    retention_table: str = env("RETENTION_TABLE", "the plaintext retention table")
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    audit_table: str = env("AUDIT_TABLE", "the audit table name")


class AnchorSettings(EnvModel):
    """AuditAnchorFunction and `audit verify`: the audit table and the Object Lock anchor bucket."""

    audit_table: str = env("AUDIT_TABLE", "the audit table name")
    anchor_bucket: str = env("AUDIT_ANCHOR_BUCKET", "the audit anchor bucket (S3 Object Lock)")


class OptionalAnchor(EnvModel):
    anchor_bucket: str | None = env("AUDIT_ANCHOR_BUCKET", "the audit anchor bucket (S3 Object Lock)", None)


class MetricsSettings(EnvModel):
    """MetricsFunction: where the counters live, and which table each stream record comes from."""

    metrics_table: str = env("METRICS_TABLE", "the dashboard counters table name")
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    scans_table: str = env("SCANS_TABLE", "the scans table name")
    audit_table: str = env("AUDIT_TABLE", "the audit table name")


class DashboardSettings(EnvModel):
    """DashboardFunction (and the local stack's dashboard): the tables it reads, the stack's default key."""

    metrics_table: str = env("METRICS_TABLE", "the dashboard counters table name")
    audit_table: str = env("AUDIT_TABLE", "the audit table name")
    access_table: str = env("ACCESS_TABLE", "the access-requests table name")
    artifacts_table: str = env("ARTIFACTS_TABLE", "the artifacts table name")
    scans_table: str = env("SCANS_TABLE", "the scans table name")
    groups: GroupsSource
    jobs_table: str | None = env("JOBS_TABLE", "the bulk jobs table (absent: no jobs shown)", None)
    kms_key_id: str = env("KMS_KEY_ID", "the stack's default KMS key alias or ARN")
    refresh_seconds: int = env("DASHBOARD_REFRESH_SECONDS", "how often the page refreshes itself", 5)


class ApiTarget(EnvModel):
    """Where the CLI sends what only the API may do (approvals): the ApiUrl output; `local env` exports it."""

    url: str | None = env("MODELSHIELD_API_URL", "the stack's HTTP API URL (its ApiUrl output)", None)


class DashboardTarget(EnvModel):
    """`modelshield dashboard`: the page to open (`local env` exports it; a deployment's DashboardUrl)."""

    url: str | None = env("DASHBOARD_URL", "the dashboard's URL", None)


@lru_cache(maxsize=1)
def scan_settings() -> ScanSettings:
    """The ScanFunction's settings, once per container."""
    return load(ScanSettings)


def api_settings() -> ApiSettings:
    return load(ApiSettings)


def rotate_settings() -> RotateSettings:
    return load(RotateSettings)


def audit_settings() -> AuditSettings:
    return load(AuditSettings)


def access_settings() -> AccessSettings:
    return load(AccessSettings)


def job_settings() -> JobSettings:
    return load(JobSettings)


def anchor_settings() -> AnchorSettings | None:
    """The anchor location, or None when this process has no anchor bucket configured."""
    if load(OptionalAnchor).anchor_bucket is None:
        return None
    return load(AnchorSettings)


def metrics_settings() -> MetricsSettings:
    return load(MetricsSettings)


def dashboard_settings() -> DashboardSettings:
    return load(DashboardSettings)


# -- the local stack points this process at itself ---------------------------------------------------
def export(values: Mapping[str, str]) -> None:
    """Set environment variables for this process and the handlers it runs in-process (local stack)."""
    os.environ.update(values)


def unset(names: Iterable[str]) -> None:
    for name in names:
        os.environ.pop(name, None)
