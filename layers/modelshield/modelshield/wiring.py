"""Wiring: build the services from validated settings. The only module that calls `boto3.client/resource`.

Handlers (`functions/*/app.py`), CLI commands and the local stack ask this module for what they need;
domain modules receive their collaborators (clients, stores, other services) as arguments and never
build them. Settings come from `modelshield.config`, which is the only reader of the environment.

Clients: S3 is built without per-request payload checksums (moto is quadratic with them, TOOLING.md)
while S3 still stores and reports the checksums we ask for explicitly, which is what we verify.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoRegionError

from modelshield import config
from modelshield.access import AccessService, vault_context_reader, vault_metadata_reader
from modelshield.api_client import ApiClient
from modelshield.audit import AuditLog
from modelshield.audit_anchor import AnchorResult, S3AnchorStore, anchor_chain
from modelshield.aws import no_stack
from modelshield.dashboard.aggregate import StreamFolder
from modelshield.dashboard.service import Dashboard
from modelshield.errors import ConfigError
from modelshield.policy.groups import SecurityGroup, default_groups
from modelshield.rotation import RotationSettings, Rotator
from modelshield.store.access import DynamoAccessStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore, DynamoCheckpointStore
from modelshield.store.groups import GroupStore
from modelshield.store.leases import LeaseStore
from modelshield.store.metrics import MetricsStore
from modelshield.store.scans import ScanStore
from modelshield.store.seal import ScanSealer

if TYPE_CHECKING:
    from modelshield.pipeline import Runtime
    from modelshield.plaintext import PlaintextLifetime

S3_CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"mode": "standard", "max_attempts": 5},
)


# -- clients ----------------------------------------------------------------------------------------
# Against a local endpoint (the moto stack on 127.0.0.1) a refused or silent connection means "no stack":
# say so within a second or two instead of retrying for half a minute. Reads keep botocore's 60 s
# (large objects, SQS long polls); AWS itself keeps botocore's connect timeout and retries.
LOCAL_CONFIG = Config(connect_timeout=1, retries={"mode": "standard", "max_attempts": 2})
_LOOPBACK = ("127.", "localhost", "[::1]", "0.0.0.0")  # noqa: S104 - names compared, nothing bound


def is_local_endpoint(url: str | None) -> bool:
    host = (url or "").split("://", 1)[-1]
    return host.startswith(_LOOPBACK)


_ANSWERED: set[str] = set()  # local endpoints that accepted a connection in this process


def _probe(endpoint: str) -> None:
    """One TCP connect to a local endpoint before the first client for it: a stopped stack is then one
    clear error at once, the same in every command, instead of each first call's retries and backoff."""
    if endpoint in _ANSWERED:
        return
    parts = urllib.parse.urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        raise no_stack(endpoint, exc.strerror or type(exc).__name__.lower()) from None
    _ANSWERED.add(endpoint)


def _with_timeouts(options: dict[str, Any]) -> dict[str, Any]:
    endpoint = options.get("endpoint_url") or config.load(config.AwsEndpoint).url
    if endpoint and is_local_endpoint(endpoint):
        _probe(endpoint)
        given = options.get("config")
        options["config"] = given.merge(LOCAL_CONFIG) if given is not None else LOCAL_CONFIG
    return options


def client(service: str, **options: Any) -> Any:
    """A boto3 client (`options`: endpoint_url, region_name, credentials, config for the local stack)."""
    if service == "s3":
        options.setdefault("config", S3_CONFIG)
    try:
        return boto3.client(service, **_with_timeouts(options))  # type: ignore[call-overload]
    except NoRegionError:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION)") from None


def s3_client(**options: Any) -> Any:
    return client("s3", **options)


def dynamodb(**options: Any) -> Any:
    """The DynamoDB resource every store is built on."""
    try:
        return boto3.resource("dynamodb", **_with_timeouts(options))
    except NoRegionError:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION)") from None


def api_client() -> ApiClient:
    """The stack's HTTP API, signed with the caller's own credentials: access requests, listings,
    approvals and denials go through it, so the requester on record is the signing identity."""
    url = config.load(config.ApiTarget).url
    if not url:
        raise ConfigError(
            "MODELSHIELD_API_URL is not set: access requests, approvals and denials go through the "
            "stack's API (set it to the stack's ApiUrl output; for the local stack run "
            '`eval "$(modelshield local env)"`)'
        )
    if is_local_endpoint(url):
        _probe(url)
    session = boto3.Session()
    if not session.region_name:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION)")

    def credentials() -> Any:
        found = session.get_credentials()
        return found.get_frozen_credentials() if found is not None else None

    return ApiClient(url, credentials=credentials, region=session.region_name)


def caller_arn() -> str:
    """The verified identity of the credentials in use (STS), never a name from the environment."""
    return str(client("sts").get_caller_identity()["Arn"])


# -- stores and small services ----------------------------------------------------------------------
def group_store(source: config.GroupsSource | None = None, *, resource: Any | None = None) -> GroupStore:
    source = source or config.load(config.GroupsSource)
    return GroupStore(source.table, resource or dynamodb(), ingest_bucket=source.ingest_bucket)


def group_source(source: config.OptionalGroupsSource) -> Callable[[], Sequence[SecurityGroup]]:
    """The effective groups for callers that may run without a groups table (then: the built-in ones)."""
    if source.table:
        store = GroupStore(source.table, dynamodb(), ingest_bucket=source.ingest_bucket)
        return store.effective
    return lambda: default_groups(ingest_bucket=source.ingest_bucket)


def audit_log(settings: config.AuditSettings | None = None) -> AuditLog:
    settings = settings or config.audit_settings()
    return AuditLog(DynamoAuditStore(settings.audit_table, dynamodb()))


def optional_audit_log() -> AuditLog | None:
    """The audit log when this process has one (AUDIT_TABLE); CLI paths that may run without a stack."""
    table = config.load(config.OptionalAudit).audit_table
    return AuditLog(DynamoAuditStore(table, dynamodb())) if table else None


def security_engineer_role(settings: config.SecurityEngineer) -> str | None:
    """The Security Engineer role as the stack stores it, when the settings name the stack's parameter.

    Then a SECURITY_ENGINEER_ROLE variable in the caller's environment plays no part: the authority to
    approve comes from the stack's configuration, read here, and the caller's STS identity."""
    if not settings.parameter:
        return settings.role
    try:
        value = client("ssm").get_parameter(Name=settings.parameter)["Parameter"]["Value"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigError(
            f"cannot read the stack's Security Engineer setting {settings.parameter}: {code}"
        ) from None
    return str(value) or None


def anchor_store() -> S3AnchorStore | None:
    """The audit anchor store when this process has one configured (AUDIT_ANCHOR_BUCKET)."""
    settings = config.anchor_settings()
    return (
        None if settings is None else S3AnchorStore(s3_client(), settings.anchor_bucket, settings.audit_table)
    )


def anchor_run() -> Callable[[], AnchorResult]:
    """AuditAnchorFunction: anchor the chain head of the configured audit table."""
    settings = config.load(config.AnchorSettings)
    store = S3AnchorStore(s3_client(), settings.anchor_bucket, settings.audit_table)
    chain = DynamoAuditStore(settings.audit_table, dynamodb())
    return lambda: anchor_chain(chain, store, table=settings.audit_table)


def access_service(
    settings: config.AccessSettings | None = None, *, kms: Any | None = None, s3: Any | None = None
) -> AccessService:
    """The access service on the tables the settings name (CLI, API, rotation)."""
    settings = settings or config.access_settings()
    resource = dynamodb()
    s3 = s3 or s3_client()
    kms = kms or client("kms")
    return AccessService(
        store=DynamoAccessStore(settings.access_table, resource),
        artifacts=ArtifactStore(settings.artifacts_table, resource),
        kms=kms,
        audit=AuditLog(DynamoAuditStore(settings.audit_table, resource)),
        security_engineer_role=security_engineer_role(settings.security_engineer),
        context_reader=vault_context_reader(s3),
        scans=scan_store(settings.scans_table, resource, kms, settings.scan_record_key)
        if settings.scans_table
        else None,
        metadata_reader=vault_metadata_reader(s3),
        retiring_principal=settings.grant_retiring_principal,
    )


def scan_store(table: str, resource: Any, kms: Any, key_id: str | None) -> ScanStore:
    """The scans table, sealing and verifying records with the stack's HMAC key when one is configured."""
    return ScanStore(table, resource, sealer=ScanSealer(kms, key_id) if key_id else None)


# -- one builder per function -----------------------------------------------------------------------
def plaintext_lifetime(
    s3: Any, audit_table: str | None, retention_table: str | None, *, principal: str, resource: Any
) -> PlaintextLifetime:
    """Removal (or scheduled removal) of plaintext uploads once their vault copy is recorded."""
    from modelshield.plaintext import PlaintextLifetime, RetentionStore

    audit = AuditLog(DynamoAuditStore(audit_table, resource)) if audit_table else None
    retention = RetentionStore(retention_table, resource) if retention_table else None
    return PlaintextLifetime(s3=s3, audit=audit, retention=retention, principal=principal)


def sweep() -> Callable[[], dict[str, int]]:
    """PlaintextSweepFunction: remove the plaintext uploads whose retention has passed."""
    settings = config.load(config.SweepSettings)
    resource = dynamodb()
    lifetime = plaintext_lifetime(
        s3_client(),
        settings.audit_table,
        settings.retention_table,
        principal="PlaintextSweepFunction",
        resource=resource,
    )
    artifacts = ArtifactStore(settings.artifacts_table, resource)
    return lambda: lifetime.sweep(artifacts)


def runtime(settings: config.ScanSettings | None = None, *, read_vault: bool = False) -> Runtime:
    """Everything the scan pipeline talks to (ScanFunction, local stack, jobs; with `read_vault`, the
    RescanFunction, which judges vault copies instead of uploads)."""
    # Imported here, not for a cycle but for start-up time: the pipeline brings every scanner and
    # Powertools' tracer, which CLI commands that never scan (`--help`, `explain`, `groups`) should not load.
    from modelshield.notify import VerdictPublisher
    from modelshield.pipeline import Runtime

    settings = settings or config.scan_settings()
    resource = dynamodb()
    s3 = s3_client()
    kms = client("kms")
    built = Runtime(
        settings=settings,
        s3=s3,
        kms=kms,
        scans=scan_store(settings.tables.scans, resource, kms, settings.scan_record_key),
        artifacts=ArtifactStore(settings.tables.artifacts, resource),
        groups=GroupStore(settings.tables.groups, resource, ingest_bucket=settings.buckets.ingest),
        publisher=VerdictPublisher(client("events"), bus) if (bus := settings.verdict_event_bus) else None,
        leases=LeaseStore(settings.tables.idempotency, resource),
        lifetime=plaintext_lifetime(
            s3,
            settings.audit_table,
            settings.retention_table,
            principal="RescanFunction" if read_vault else "ScanFunction",
            resource=resource,
        )
        if settings.remove_plaintext
        else None,
        read_vault=read_vault,
    )
    built.sweep_workdir(older_than_seconds=0)  # a fresh container: no scan here is using these files
    return built


def rotator(settings: config.RotateSettings | None = None, *, principal: str) -> Rotator:
    """The Rotator for the tables and key the settings name (RotateFunction and `keys rotate`)."""
    settings = settings or config.rotate_settings()
    s3, kms, resource = s3_client(), client("kms"), dynamodb()
    access = settings.access
    return Rotator(
        s3=s3,
        kms=kms,
        artifacts=ArtifactStore(settings.artifacts_table, resource),
        groups=group_source(settings.groups),
        audit=AuditLog(DynamoAuditStore(settings.audit_table, resource)),
        settings=RotationSettings(
            default_key_id=settings.kms_key_id,
            margin_ms=settings.margin_ms,
            delete_old_versions=not settings.keep_old_versions,
            workdir=settings.workdir,
            principal=principal,
        ),
        access=access_service(access, kms=kms, s3=s3) if access is not None else None,
        checkpoints=DynamoCheckpointStore(settings.audit_table, resource),
        leases=LeaseStore(settings.idempotency_table, resource) if settings.idempotency_table else None,
    )


def metrics_folder(settings: config.MetricsSettings | None = None) -> StreamFolder:
    """MetricsFunction: stream records → the dashboard's counters."""
    settings = settings or config.metrics_settings()
    return StreamFolder(settings, MetricsStore(settings.metrics_table, dynamodb()))


def dashboard(settings: config.DashboardSettings | None = None) -> Dashboard:
    """DashboardFunction and the local stack's dashboard: read-only over the tables and KMS."""
    return Dashboard(settings or config.dashboard_settings(), dynamodb=dynamodb(), kms=client("kms"))


def job_store(settings: config.JobSettings | None = None) -> Any:
    from modelshield.jobs.store import JobStore

    return JobStore((settings or config.job_settings()).table, dynamodb())


def job_service(settings: config.JobSettings | None = None) -> Any:
    """Start, read, cancel and retry bulk jobs (the jobs API and `modelshield jobs`)."""
    from modelshield.jobs.service import JobService

    settings = settings or config.job_settings()
    if not settings.audit_table:
        raise ConfigError("missing environment variable AUDIT_TABLE (job starts and cancels are audited)")
    return JobService(
        store=job_store(settings),
        sfn=client("stepfunctions"),
        s3=s3_client(),
        state_machine_arn=settings.state_machine_arn,
        reports_bucket=settings.reports_bucket,
        audit=audit_log(config.AuditSettings(audit_table=settings.audit_table)),
        security_engineer_role=security_engineer_role(settings.security_engineer),
        repository_buckets=settings.repositories,
    )


def job_runtime(*, principal: str = "JobWorkerFunction") -> Any:
    """JobWorkerFunction: the scan pipeline's runtime, the jobs table, the engine, rotation (lazily)."""
    from pathlib import Path

    from modelshield.jobs.worker import JobRuntime

    scan, jobs = config.scan_settings(), config.job_settings()
    made: list[Rotator] = []

    def rotation() -> Rotator:
        if not made:
            made.append(rotator(principal=principal))
        return made[0]

    return JobRuntime(
        pipeline=runtime(scan),
        store=job_store(jobs),
        sfn=client("stepfunctions"),
        reports_bucket=jobs.reports_bucket,
        rotator=rotation,
        workdir=Path(scan.workdir),
    )


class ApiServices:
    """What the API routes use, built on first use and kept for the container's life.

    The one way the API gets its collaborators: routes call `modelshield.api.services()`; tests hand
    in prepared ones with `ApiServices(access=..., audit=...)` and `modelshield.api.use_services(...)`.
    """

    def __init__(self, **prepared: Any) -> None:
        known = {
            "settings",
            "access",
            "audit",
            "groups",
            "scans",
            "artifacts",
            "sqs",
            "kms",
            "anchors",
            "security_engineer",
            "jobs",
        }
        unknown = set(prepared) - known
        if unknown:
            raise TypeError(f"ApiServices has no {', '.join(sorted(unknown))}")
        self.__dict__.update(prepared)  # cached_property reads the instance dict first

    @cached_property
    def settings(self) -> config.ApiSettings:
        return config.api_settings()

    @cached_property
    def access(self) -> AccessService:
        return access_service()

    @cached_property
    def audit(self) -> AuditLog:
        return audit_log()

    @cached_property
    def anchors(self) -> S3AnchorStore | None:
        return anchor_store()

    @cached_property
    def security_engineer(self) -> str | None:
        """Who may change groups and rescan: the stack's setting (see `security_engineer_role`)."""
        return security_engineer_role(self.settings.security_engineer)

    @cached_property
    def groups(self) -> GroupStore:
        return group_store(self.settings.groups)

    @cached_property
    def scans(self) -> ScanStore:
        return ScanStore(self.settings.scans_table, dynamodb())

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifacts_table, dynamodb())

    @cached_property
    def sqs(self) -> Any:
        return client("sqs")

    @cached_property
    def kms(self) -> Any:
        """For checking a groups document's keys before storing it (policy/preflight.py)."""
        return client("kms")

    @cached_property
    def jobs(self) -> Any:
        """modelshield.jobs.service.JobService"""
        return job_service()
