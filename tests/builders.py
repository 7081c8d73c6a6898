"""What several test files build by hand, built once: moto credentials and accounts, the template's stack
under in-process moto, sample events, and "an encrypted ALLOWED artifact" in the vault.

Test files import from here (`from tests.builders import ...`), never from another test's conftest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from modelshield import wiring
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import encrypt_to_s3
from modelshield.local.stack import LocalContext, sqs_record
from modelshield.local.template import create_template_table
from modelshield.models import (
    ArtifactRef,
    ArtifactState,
    EncryptionState,
    Format,
    ScanRecord,
    Verdict,
    encryption_context,
)
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.scans import ScanStore
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
ACCOUNT = "123456789012"
FAKE_AWS = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def moto_credentials(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """Fake credentials and region for moto; nothing that could reach a real account or endpoint."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**FAKE_AWS, **extra}.items():
        monkeypatch.setenv(name, value)


@contextmanager
def moto_account(
    *, versioned: Sequence[str] = (), unversioned: Sequence[str] = ()
) -> Iterator[tuple[Any, Any]]:
    """moto in-process with the named buckets; yields (s3, kms) clients as modelshield.wiring builds them
    (S3 without per-request checksums: moto is quadratic with them)."""
    with mock_aws():
        s3, kms = wiring.s3_client(), wiring.client("kms")
        for bucket in (*versioned, *unversioned):
            s3.create_bucket(Bucket=bucket)
        for bucket in versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield s3, kms


@contextmanager
def keys_and_access_account(vault: str) -> Iterator[Any]:
    """moto with the audit, access and artifacts tables (as template.yaml defines them, named `audit`,
    `access`, `artifacts`) and a versioned vault bucket; yields an S3 client."""
    with mock_aws():
        dynamodb = wiring.client("dynamodb")
        for logical, name in (
            ("AuditTable", "audit"),
            ("AccessTable", "access"),
            ("ArtifactsTable", "artifacts"),
            ("ScansTable", "scans"),
        ):
            create_template_table(dynamodb, logical, name)
        s3 = wiring.s3_client()
        s3.create_bucket(Bucket=vault)
        s3.put_bucket_versioning(Bucket=vault, VersioningConfiguration={"Status": "Enabled"})
        yield s3


def encrypted_allowed_artifact(
    *,
    s3: Any,
    kms: Any,
    artifacts: ArtifactStore,
    key_arn: str,
    name: str,
    data: bytes,
    vault: str,
    now: datetime,
    data_key_created_at: datetime | None = None,
    group: str = "S3-Production",
    ingest: str = "ingest",
    vault_key: str | None = None,
    frame_length: int = 4096,
    metadata: dict[str, str] | None = None,
) -> ArtifactState:
    """Encrypt `data` into the vault the way the pipeline does, and record the ALLOWED artifact version."""
    ref = ArtifactRef(bucket=ingest, key=name, version_id="v1")
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="modelshield-test-") as tmp:
        plain = Path(tmp) / "plain"
        plain.write_bytes(data)
        stored = encrypt_to_s3(
            plain,
            s3=s3,
            keyring=KmsKeyring(kms),
            key_id=key_arn,
            bucket=vault,
            key=vault_key or f"vault/{name}",
            context=encryption_context(ref, sha256=sha, group=group),
            frame_length=frame_length,
            metadata=metadata,
        )
    state = ArtifactState(
        artifact_id=ref.artifact_id,
        version_id="v1",
        bucket=ingest,
        key=name,
        sha256=sha,
        size=len(data),
        format=Format.SAFETENSORS,
        group=group,
        verdict=Verdict.ALLOWED,
        encryption_state=EncryptionState.ENCRYPTED,
        vault_bucket=vault,
        vault_key=stored.key,
        vault_version_id=stored.version_id,
        ciphertext_size=stored.size,
        wrapping_key_arn=stored.key_arn,
        data_key_created_at=data_key_created_at or now,
        latest_scan_ref="scan-1",
        updated_at=now,
    )
    saved = artifacts.save(state, expected_revision=None)
    record_scan_of(saved)
    return saved


def record_scan_of(state: ArtifactState, scans: ScanStore | None = None, **changes: Any) -> ScanRecord:
    """Append the scan record the pipeline would have written for `state` (to the `scans` table by
    default): releases are checked against it, so a test artifact needs one. `changes` forge fields."""
    record = ScanRecord(
        artifact_id=state.artifact_id,
        scan_ref=f"{state.updated_at:%Y-%m-%dT%H:%M:%S.%fZ}#{state.version_id}#scan-1",
        scan_id="scan-1",
        bucket=state.bucket,
        key=state.key,
        version_id=state.version_id,
        sha256=state.sha256,
        size=state.size,
        format=state.format,
        verdict=state.verdict,
        group=state.group,
        group_version=1,
        rules=[],
        findings=[],
        scanner_version="test",
        scanned_at=state.updated_at,
        encryption_state=state.encryption_state,
        vault_uri=f"s3://{state.vault_bucket}/{state.vault_key}?versionId={state.vault_version_id}",
    ).model_copy(update=changes)
    (scans or ScanStore("scans", wiring.dynamodb())).append(record)
    return record


# -- the template's stack under in-process moto -------------------------------------------------------
@dataclass
class MotoStack:
    env: dict[str, str]
    s3: Any
    sqs: Any
    kms: Any
    dynamodb: Any
    handler: Any
    queue_url: str
    queue_arn: str
    provisioned: Any = None
    rescan_handler: Any = None
    rescan_queue_url: str = ""
    rescan_queue_arn: str = ""

    @property
    def ingest(self) -> str:
        return self.env["INGEST_BUCKET"]

    @property
    def vault(self) -> str:
        return self.env["VAULT_BUCKET"]

    def invoke(self, event: dict[str, Any], timeout: int = 900) -> dict[str, Any]:
        return self.handler(event, LocalContext("ScanFunction", 3008, timeout))

    def deliver_queued(self) -> dict[str, Any]:
        """Receive what S3 sent to the scan queue and hand it to the handler as Lambda would."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        messages = [m for m in messages if json.loads(m["Body"]).get("Event") != "s3:TestEvent"]
        return self.invoke({"Records": [sqs_record(m, self.queue_arn) for m in messages]})

    def deliver_rescans(self) -> dict[str, Any]:
        """Hand what waits on the rescan queue to the RescanFunction's handler, as Lambda would."""
        messages = self.sqs.receive_message(QueueUrl=self.rescan_queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        event = {"Records": [sqs_record(m, self.rescan_queue_arn) for m in messages]}
        return self.rescan_handler(event, LocalContext("RescanFunction", 3008, 900))

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        return self.s3.put_object(Bucket=self.ingest, Key=key, Body=body, **kwargs)["VersionId"]

    def table(self, env_name: str) -> Any:
        return self.dynamodb.Table(self.env[env_name])


def s3_event(
    stack: MotoStack, key: str, version_id: str | None, template: str = "s3_put_via_sqs.json"
) -> dict[str, Any]:
    """A sample event from events/, pointed at this stack's bucket and an uploaded object version."""
    event = json.loads((EVENTS / template).read_text())
    for record in event["Records"]:
        body = json.loads(record["body"])
        s3 = body["Records"][0]["s3"]
        s3["bucket"]["name"] = stack.ingest
        s3["bucket"]["arn"] = f"arn:aws:s3:::{stack.ingest}"
        s3["object"]["key"] = quote_plus(key, safe="/")
        if version_id is None:
            s3["object"].pop("versionId", None)
        else:
            s3["object"]["versionId"] = version_id
            try:
                head = stack.s3.head_object(Bucket=stack.ingest, Key=key, VersionId=version_id)
                s3["object"]["eTag"] = head["ETag"].strip('"')
                s3["object"]["size"] = head["ContentLength"]
            except stack.s3.exceptions.ClientError:
                pass  # deleted on purpose by the test: keep the sample's eTag and size
        record["body"] = json.dumps(body)
    return event


@contextmanager
def provisioned_template(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, moto_config: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, Any], Any]]:
    """The whole template provisioned on in-process moto: (clients by service, the provisioned stack).
    moto credentials, a private work directory, small frames; `moto_config` e.g. runs Step Functions."""
    import boto3
    from botocore.config import Config
    from modelshield import config
    from modelshield.local.template import LocalProvisioner, load_template
    from moto import mock_aws

    moto_credentials(
        monkeypatch, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_NAMESPACE="ModelShieldTest"
    )
    monkeypatch.setenv("WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("FRAME_LENGTH", "4096")  # several frames even for small test artifacts
    with mock_aws(**({"config": moto_config} if moto_config else {})):
        cfg = Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        )
        clients = {
            "s3": boto3.client("s3", config=cfg),
            **{name: boto3.client(name) for name in ("sqs", "dynamodb", "kms", "ssm", "events")},
        }
        if moto_config:  # the state machines get their definitions (and can run) only when asked
            clients["stepfunctions"] = boto3.client("stepfunctions")
        out = LocalProvisioner(
            load_template(ROOT / "template.yaml"), stack_name="mstest", clients=clients
        ).provision()
        try:
            yield clients, out
        finally:
            config.scan_settings.cache_clear()


@contextmanager
def template_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoStack]:
    """The whole template on in-process moto with the real ScanFunction handler (the integration and
    fault suites' `moto_stack`)."""
    import boto3
    from modelshield import config
    from modelshield.local.stack import load_handler

    with provisioned_template(monkeypatch, tmp_path) as (clients, out):
        spec = out.functions["ScanFunction"]
        for name, value in spec.environment.items():
            monkeypatch.setenv(name, value)
        config.scan_settings.cache_clear()
        yield MotoStack(
            env=dict(os.environ),
            s3=clients["s3"],
            sqs=clients["sqs"],
            kms=clients["kms"],
            dynamodb=boto3.resource("dynamodb"),
            handler=load_handler(spec),
            queue_url=out.names["ScanQueue"],
            queue_arn=out.arns["ScanQueue"],
            provisioned=out,
            rescan_handler=load_handler(out.functions["RescanFunction"]),
            rescan_queue_url=out.names["RescanQueue"],
            rescan_queue_arn=out.arns["RescanQueue"],
        )
