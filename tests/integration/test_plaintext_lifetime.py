"""The plaintext upload's lifetime: removed once its vault copy is recorded, or after a group's retention.

On in-process moto with the retention, artifacts and audit tables as template.yaml defines them. The
sweep survives restarts because its only state is the retention table (a new PlaintextLifetime sweeps
what an earlier one scheduled).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from modelshield.audit import AuditLog, AuditQuery
from modelshield.local.template import create_template_table
from modelshield.models import ArtifactRef, ArtifactState, EncryptionState, Format, Verdict
from modelshield.plaintext import PlaintextLifetime, RetentionStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore
from moto import mock_aws

from tests.builders import moto_credentials

T0 = datetime(2026, 12, 1, tzinfo=UTC)
BUCKET = "ingest"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Any:
    moto_credentials(monkeypatch)
    with mock_aws():
        ddb = boto3.client("dynamodb")
        for logical, name in (
            ("PlaintextRetentionTable", "retention"),
            ("ArtifactsTable", "artifacts"),
            ("AuditTable", "audit"),
        ):
            create_template_table(ddb, logical, name)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        resource = boto3.resource("dynamodb")
        yield (
            s3,
            ArtifactStore("artifacts", resource),
            AuditLog(DynamoAuditStore("audit", resource)),
            RetentionStore("retention", resource),
        )


def _recorded(artifacts: ArtifactStore, ref: ArtifactRef, *, vault_copy: bool = True) -> ArtifactState:
    return artifacts.save(
        ArtifactState(
            artifact_id=ref.artifact_id,
            version_id=str(ref.version_id),
            bucket=ref.bucket,
            key=ref.key,
            sha256="0" * 64,
            size=5,
            format=Format.PICKLE,
            group="g",
            verdict=Verdict.ALLOWED,
            encryption_state=EncryptionState.ENCRYPTED if vault_copy else EncryptionState.PLAINTEXT,
            vault_bucket="vault" if vault_copy else None,
            vault_key=ref.key if vault_copy else None,
            vault_version_id="vv1" if vault_copy else None,
            wrapping_key_arn="arn:aws:kms:us-east-1:123456789012:key/k",
            latest_scan_ref="s1",
            updated_at=T0,
        ),
        expected_revision=None,
    )


def _versions(s3: Any, key: str) -> list[str]:
    return [v["VersionId"] for v in s3.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])]


def test_retention_keeps_the_plaintext_until_due_then_a_fresh_sweeper_removes_it(world: Any) -> None:
    s3, artifacts, audit, retention = world
    clock = Clock()
    version = s3.put_object(Bucket=BUCKET, Key="models/m.pt", Body=b"model")["VersionId"]
    ref = ArtifactRef(bucket=BUCKET, key="models/m.pt", version_id=version)
    state = _recorded(artifacts, ref)
    # Given a group keeping plaintext 3 days, When the verdict is recorded
    outcome = PlaintextLifetime(s3=s3, audit=audit, retention=retention, clock=clock).after_verdict(
        ref, state, 3
    )
    # Then the upload stays, its removal is scheduled and audited
    assert outcome.startswith("scheduled") and _versions(s3, "models/m.pt") == [version]
    # And a sweep before the due time removes nothing
    sweeper = PlaintextLifetime(s3=s3, audit=audit, retention=retention, principal="Sweep", clock=clock)
    assert sweeper.sweep(artifacts) == {"removed": 0, "kept": 0}
    # When the retention has passed, a new sweeper (a restart: its only state is the table) removes it
    clock.now = T0 + timedelta(days=3, seconds=1)
    restarted = PlaintextLifetime(s3=s3, audit=audit, retention=retention, principal="Sweep", clock=clock)
    assert restarted.sweep(artifacts) == {"removed": 1, "kept": 0}
    assert _versions(s3, "models/m.pt") == []
    actions = [
        (r.action, r.decision.value)
        for r in audit.list(AuditQuery(artifact_id=ref.artifact_id, newest_first=False))
    ]
    assert actions == [("ingest.plaintext-retained", "INFO"), ("ingest.plaintext-removed", "ALLOWED")]
    assert list(retention.due(clock.now)) == []


def test_nothing_is_removed_without_a_recorded_vault_copy(world: Any) -> None:
    s3, artifacts, audit, retention = world
    clock = Clock()
    version = s3.put_object(Bucket=BUCKET, Key="models/x.pt", Body=b"x")["VersionId"]
    ref = ArtifactRef(bucket=BUCKET, key="models/x.pt", version_id=version)
    lifetime = PlaintextLifetime(s3=s3, audit=audit, retention=retention, clock=clock)
    # Given no verified copy recorded, Then the default (immediate) removal does not happen
    assert lifetime.after_verdict(ref, _recorded(artifacts, ref, vault_copy=False), 0).startswith("kept")
    assert _versions(s3, "models/x.pt") == [version]
    # And a signature sidecar stays even with its copy recorded (other uploads are judged with it)
    sig = s3.put_object(Bucket=BUCKET, Key="models/x.pt.sig", Body=b"sig")["VersionId"]
    sig_ref = ArtifactRef(bucket=BUCKET, key="models/x.pt.sig", version_id=sig)
    assert lifetime.after_verdict(sig_ref, _recorded(artifacts, sig_ref), 0).startswith("kept")
    # And a due removal whose recorded copy has since vanished is kept, and that is audited as an error
    other = s3.put_object(Bucket=BUCKET, Key="models/y.pt", Body=b"y")["VersionId"]
    other_ref = ArtifactRef(bucket=BUCKET, key="models/y.pt", version_id=other)
    assert lifetime.after_verdict(other_ref, _recorded(artifacts, other_ref), 1).startswith("scheduled")
    row = artifacts.get(other_ref.artifact_id, other)
    assert row is not None
    artifacts.save(row.model_copy(update={"vault_version_id": None}), expected_revision=row.revision)
    clock.now = T0 + timedelta(days=2)
    assert lifetime.sweep(artifacts) == {"removed": 0, "kept": 1}
    assert _versions(s3, "models/y.pt") == [other]
