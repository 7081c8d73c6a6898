"""The decryption-access flow end to end under moto: request, approval rules, grant, decrypt, expiry, audit.

moto does not enforce grants, key policies or IAM (TOOLING.md), so these tests assert what ModelShield
itself enforces before it uses a grant, and what it asks KMS to create.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield.access import (
    AccessService,
    RequestConflict,
    RequestStatus,
    decrypt_with_grant,
    vault_context_reader,
)
from modelshield.audit import AuditLog, AuditQuery, Decision
from modelshield.cli import main as cli_main
from modelshield.errors import AccessDenied
from modelshield.models import (
    ArtifactRef,
    ArtifactState,
    Verdict,
    encryption_context,
)
from modelshield.store.access import DynamoAccessStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore
from modelshield.store.scans import ScanStore
from modelshield.wiring import dynamodb

from tests.builders import (
    encrypted_allowed_artifact,
    keys_and_access_account,
    moto_credentials,
    record_scan_of,
)

ACCOUNT = "123456789012"
CONSUMER = f"arn:aws:sts::{ACCOUNT}:assumed-role/InferenceService/i-0abc"
CONSUMER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/InferenceService"
OTHER = f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/laptop"
ALICE = f"arn:aws:sts::{ACCOUNT}:assumed-role/ModelShieldSecurityEngineer/alice"
BOB_SAME_ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/ModelShieldSecurityEngineer/bob"
CAROL = f"arn:aws:iam::{ACCOUNT}:user/carol"
SE_PATTERN = f"arn:aws:iam::*:role/ModelShieldSecurityEngineer,{CAROL}"
VAULT = "vault-bucket"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def put_artifact(
    s3: Any, kms: Any, artifacts: ArtifactStore, key_arn: str, name: str, data: bytes
) -> ArtifactState:
    """Encrypt `data` into the vault the way the pipeline does, and record the artifact version."""
    return encrypted_allowed_artifact(
        s3=s3, kms=kms, artifacts=artifacts, key_arn=key_arn, name=name, data=data, vault=VAULT, now=T0
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    moto_credentials(
        monkeypatch,
        AUDIT_TABLE="audit",
        ACCESS_TABLE="access",
        ARTIFACTS_TABLE="artifacts",
        SCANS_TABLE="scans",
        SECURITY_ENGINEER_ROLE=SE_PATTERN,
    )
    with keys_and_access_account(VAULT) as s3:
        kms = boto3.client("kms")
        key_arn = kms.create_key(Description="vault")["KeyMetadata"]["Arn"]
        artifacts = ArtifactStore("artifacts", dynamodb())
        clock = Clock()
        audit = AuditLog(DynamoAuditStore("audit", dynamodb()), clock=clock)
        service = AccessService(
            store=DynamoAccessStore("access", dynamodb()),
            artifacts=artifacts,
            kms=kms,
            audit=audit,
            security_engineer_role=SE_PATTERN,
            scans=ScanStore("scans", dynamodb()),
            context_reader=vault_context_reader(s3),
            clock=clock,
        )
        data = os.urandom(50_000)
        artifact = put_artifact(s3, kms, artifacts, key_arn, "models/resnet.safetensors", data)
        yield {
            "s3": s3,
            "kms": kms,
            "key_arn": key_arn,
            "artifacts": artifacts,
            "artifact": artifact,
            "data": data,
            "service": service,
            "audit": audit,
            "clock": clock,
            "tmp": tmp_path,
        }


def _actions(audit: AuditLog, artifact_id: str) -> list[tuple[str, str, str]]:
    records = audit.list(AuditQuery(artifact_id=artifact_id, newest_first=False, limit=1000))
    return [(r.action, r.decision.value, r.principal) for r in records]


def test_full_flow_request_approve_decrypt_expire_retire(env: dict[str, Any]) -> None:
    service: AccessService = env["service"]
    artifact: ArtifactState = env["artifact"]
    kms, s3, clock, tmp = env["kms"], env["s3"], env["clock"], env["tmp"]

    # Given a consumer's pending request for two hours
    request = service.request(artifact.artifact_id, requester=CONSUMER, reason="nightly eval", hours=2)
    assert request.status == RequestStatus.PENDING and request.grantee == CONSUMER_ROLE

    # When the consumer tries to decrypt before approval, or to approve it themselves
    with pytest.raises(AccessDenied, match="not been approved"):
        decrypt_with_grant(service, request.request_id, tmp / "early.bin", principal=CONSUMER, s3=s3)
    with pytest.raises(AccessDenied, match="not a Security Engineer"):
        service.approve(request.request_id, approver=CONSUMER)
    # Then nothing was granted
    assert kms.list_grants(KeyId=env["key_arn"])["Grants"] == []

    # When a Security Engineer approves
    approved = service.approve(request.request_id, approver=ALICE, reason="ticket SEC-12")
    # Then one grant exists: Decrypt only, for the consumer's role only, constrained to the artifact's context
    grants = kms.list_grants(KeyId=env["key_arn"])["Grants"]
    assert len(grants) == 1
    grant = grants[0]
    assert grant["GranteePrincipal"] == CONSUMER_ROLE
    assert grant["Operations"] == ["Decrypt"]
    expected_context = encryption_context(
        ArtifactRef(bucket="ingest", key="models/resnet.safetensors", version_id="v1"),
        sha256=artifact.sha256 or "",
        group="S3-Production",
    )
    assert grant["Constraints"] == {"EncryptionContextEquals": expected_context}
    assert approved.status == RequestStatus.APPROVED and approved.grant_id == grant["GrantId"]
    assert approved.expires_at == T0 + timedelta(hours=2)
    assert "grant_token" not in approved.public()

    # When the consumer decrypts with the grant (watching what is sent to KMS)
    sent: list[dict[str, Any]] = []
    service.kms.meta.events.register(
        "provide-client-params.kms.Decrypt", lambda params, **_: sent.append(params)
    )
    out = tmp / "model.bin"
    sha = decrypt_with_grant(service, request.request_id, out, principal=CONSUMER, s3=s3)
    # Then the plaintext is the original, and KMS was asked with the grant token and the exact context
    assert out.read_bytes() == env["data"] and sha == artifact.sha256
    assert sent and sent[-1]["GrantTokens"] == [approved.grant_token]
    assert sent[-1]["EncryptionContext"] == expected_context

    # When someone else presents the request
    with pytest.raises(AccessDenied, match="grant is for"):
        decrypt_with_grant(service, request.request_id, tmp / "other.bin", principal=OTHER, s3=s3)

    # When the expiry passes, decrypt is refused even before the grant is retired
    clock.now = T0 + timedelta(hours=2, minutes=1)
    with pytest.raises(AccessDenied, match="expired"):
        decrypt_with_grant(service, request.request_id, tmp / "late.bin", principal=CONSUMER, s3=s3)
    # And the rotation run's retirement revokes the grant and marks the request
    retired = service.retire_expired(principal="rotation")
    assert [r.request_id for r in retired] == [request.request_id]
    assert kms.list_grants(KeyId=env["key_arn"])["Grants"] == []
    assert service.get(request.request_id).status == RequestStatus.EXPIRED
    with pytest.raises(AccessDenied, match=r"expired .* retired; request access again"):
        decrypt_with_grant(service, request.request_id, tmp / "later.bin", principal=CONSUMER, s3=s3)
    assert not (tmp / "later.bin").exists() and not (tmp / "late.bin").exists()

    # Then every step is in the audit log, in order, and the chain verifies
    assert _actions(env["audit"], artifact.artifact_id) == [
        ("access.request", "ALLOWED", CONSUMER),
        ("artifact.decrypt", "DENIED", CONSUMER),
        ("access.approve", "DENIED", CONSUMER),
        ("access.approve", "ALLOWED", ALICE),
        ("grant.create", "ALLOWED", CONSUMER_ROLE),
        ("artifact.decrypt", "ALLOWED", CONSUMER),
        ("artifact.decrypt", "DENIED", OTHER),
        ("artifact.decrypt", "DENIED", CONSUMER),
        ("grant.retire", "ALLOWED", "rotation"),
        ("artifact.decrypt", "DENIED", CONSUMER),
    ]
    assert env["audit"].verify().ok


def test_self_approval_is_refused_even_from_another_session_of_the_same_role(env: dict[str, Any]) -> None:
    service: AccessService = env["service"]
    artifact = env["artifact"]
    # Given a Security Engineer's own request
    request = service.request(artifact.artifact_id, requester=ALICE, reason="debugging", hours=1)
    # When the same role approves it under another session name
    with pytest.raises(AccessDenied, match="same principal"):
        service.approve(request.request_id, approver=BOB_SAME_ROLE)
    # Then it stays pending, no grant exists, and the attempt is audited as denied
    assert service.get(request.request_id).status == RequestStatus.PENDING
    assert env["kms"].list_grants(KeyId=env["key_arn"])["Grants"] == []
    refused = env["audit"].list(AuditQuery(action="access.approve", decision=Decision.DENIED))
    assert refused[0].principal == BOB_SAME_ROLE and refused[0].reason == "self-approval is not allowed"
    # And a different Security Engineer (an IAM user on the list) can approve it
    assert service.approve(request.request_id, approver=CAROL).status == RequestStatus.APPROVED


def test_denied_request_cannot_decrypt_and_cannot_be_decided_twice(env: dict[str, Any]) -> None:
    service: AccessService = env["service"]
    request = service.request(env["artifact"].artifact_id, requester=CONSUMER, reason="x", hours=1)
    # When a Security Engineer denies it
    service.deny(request.request_id, approver=ALICE, reason="no business need")
    # Then decrypt explains the denial, and a later approval is a conflict, not a grant
    with pytest.raises(AccessDenied, match=r"denied by .*alice: no business need"):
        decrypt_with_grant(service, request.request_id, env["tmp"] / "x", principal=CONSUMER, s3=env["s3"])
    with pytest.raises(RequestConflict, match="already DENIED"):
        service.approve(request.request_id, approver=CAROL)
    assert env["kms"].list_grants(KeyId=env["key_arn"])["Grants"] == []


def test_blocked_artifacts_cannot_be_requested(env: dict[str, Any]) -> None:
    service: AccessService = env["service"]
    artifacts: ArtifactStore = env["artifacts"]
    artifact = env["artifact"]
    # Given the artifact was re-scanned and blocked
    artifacts.save(
        artifact.model_copy(update={"verdict": Verdict.BLOCKED}), expected_revision=artifact.revision
    )
    # Then a request is refused and audited
    with pytest.raises(AccessDenied, match="verdict is BLOCKED"):
        service.request(artifact.artifact_id, requester=CONSUMER, reason="x", hours=1)
    assert env["audit"].list(AuditQuery(decision=Decision.DENIED))[0].action == "access.request"


def test_decrypt_refuses_a_vault_object_whose_context_differs_from_the_grant(env: dict[str, Any]) -> None:
    service: AccessService = env["service"]
    artifacts: ArtifactStore = env["artifacts"]
    artifact = env["artifact"]
    request = service.request(artifact.artifact_id, requester=CONSUMER, reason="eval", hours=1)
    service.approve(request.request_id, approver=ALICE)
    # Given the record now points at another artifact's vault object (same key, different context)
    other = put_artifact(env["s3"], env["kms"], artifacts, env["key_arn"], "models/other.pt", b"other bytes")
    current = artifacts.get(artifact.artifact_id, "v1")
    assert current is not None
    artifacts.save(
        current.model_copy(update={"vault_key": other.vault_key, "vault_version_id": other.vault_version_id}),
        expected_revision=current.revision,
    )
    # Then ModelShield refuses before asking KMS (moto would not enforce the grant's constraint): the
    # latest scan record still says where this version was stored
    with pytest.raises(AccessDenied, match="sources disagree"):
        decrypt_with_grant(service, request.request_id, env["tmp"] / "y", principal=CONSUMER, s3=env["s3"])
    # And when a newer scan record is forged to agree with the row, the vault object's own
    # authenticated context still names another artifact: refused again, and nothing was written
    moved = artifacts.get(artifact.artifact_id, "v1")
    assert moved is not None
    record_scan_of(moved, scan_id="forged", scan_ref="9999-01-01T00:00:00.000000Z#v1#forged")
    with pytest.raises(AccessDenied, match="encryption context names"):
        decrypt_with_grant(service, request.request_id, env["tmp"] / "y", principal=CONSUMER, s3=env["s3"])
    assert not (env["tmp"] / "y").exists()


def test_cli_access_and_audit_commands(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    artifact = env["artifact"]
    service: AccessService = env["service"]
    env["clock"].now = datetime.now(UTC)  # the CLI's own steps run on the real clock
    # When `access request|list|show|approve` have no API to go through: one clear line each, exit 2, and
    # nothing written (the requester and approver are the identity the API verifies; the signed path is
    # tested through the ApiFunction and on the local stack)
    for argv in (
        ["access", "request", artifact.artifact_id, "--reason", "eval", "--hours", "3"],
        ["access", "list", "--mine"],
        ["access", "show", "req-anything"],
        ["access", "decrypt", "req-anything", "-o", str(env["tmp"] / "never.bin")],
    ):
        assert cli_main(argv) == 2, argv
        assert "MODELSHIELD_API_URL is not set" in capsys.readouterr().err
    assert service.list() == []
    # Given a request made through the API's service, which refuses the requester as approver
    request_id = service.request(artifact.artifact_id, requester=CONSUMER, reason="eval", hours=3).request_id
    assert cli_main(["access", "approve", request_id]) == 2
    assert "MODELSHIELD_API_URL is not set" in capsys.readouterr().err
    with pytest.raises(AccessDenied, match="is not a Security Engineer"):
        service.approve(request_id, approver=CONSUMER)
    assert service.approve(request_id, approver=ALICE, reason="ok").status.value == "APPROVED"
    # Then the consumer can decrypt with it, with their own credentials through the grant (the CLI's
    # `access decrypt` asks the API for the same authorization: tested on the local stack)
    out = env["tmp"] / "cli-model.bin"
    assert decrypt_with_grant(service, request_id, out, principal=CONSUMER, s3=env["s3"]) == artifact.sha256
    assert out.read_bytes() == env["data"]
    assert not (env["tmp"] / "never.bin").exists()
    # And `audit list` shows the steps, `audit verify` is clean
    assert (
        cli_main(["audit", "list", "--artifact", artifact.artifact_id, "--format", "json", "--oldest-first"])
        == 0
    )
    actions = [r["action"] for r in json.loads(capsys.readouterr().out)["records"]]
    assert actions == [
        "access.request",
        "access.approve",
        "access.approve",
        "grant.create",
        "artifact.decrypt",
    ]
    assert cli_main(["audit", "verify"]) == 0
    assert "OK: 5 records" in capsys.readouterr().out

    # When a record is deleted behind the log's back, and another is edited
    table = boto3.resource("dynamodb").Table("audit")
    table.delete_item(Key={"pk": "chain", "seq": 2})
    table.update_item(
        Key={"pk": "chain", "seq": 4},
        UpdateExpression="SET principal = :p",
        ExpressionAttributeValues={":p": CAROL},
    )
    # Then verify exits 1 and names both places
    assert cli_main(["audit", "verify"]) == 1
    out_text = capsys.readouterr().out
    assert "TAMPERED" in out_text
    assert "seq 2: missing: record 2 deleted" in out_text
    assert "seq 4: edited: record 4 (grant.create) was edited" in out_text
    assert cli_main(["audit", "verify", "--format", "json"]) == 1
    kinds = [(p["seq"], p["kind"]) for p in json.loads(capsys.readouterr().out)["problems"]]
    assert kinds == [(2, "missing"), (4, "edited")]
