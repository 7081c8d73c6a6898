"""The decryption-access path under injected faults: no KMS grant outlives an approval that failed, and no
decrypt is authorized unless its audit record is written. Failures hit the real boto3 clients (harness.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from modelshield.access import AccessService, RequestStatus, vault_context_reader
from modelshield.audit import AuditLog, AuditQuery, Decision
from modelshield.store.access import DynamoAccessStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore
from modelshield.store.scans import ScanStore
from modelshield.wiring import dynamodb

from tests.builders import encrypted_allowed_artifact, keys_and_access_account, moto_credentials
from tests.faults.harness import Faults, table_is

CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc"
ALICE = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
ENGINEERS = "arn:aws:iam::*:role/ModelShieldSecurityEngineer"


@pytest.fixture
def access(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """An encrypted, released artifact and the access service, on clients built after the fault hooks."""
    moto_credentials(monkeypatch, POWERTOOLS_TRACE_DISABLED="true")
    with keys_and_access_account("vault") as s3:
        kms = boto3.client("kms")
        key_arn = kms.create_key()["KeyMetadata"]["Arn"]
        artifacts = ArtifactStore("artifacts", dynamodb())
        artifact = encrypted_allowed_artifact(
            s3=s3,
            kms=kms,
            artifacts=artifacts,
            key_arn=key_arn,
            name="models/m.safetensors",
            data=os.urandom(20_000),
            vault="vault",
            now=datetime.now(UTC),
        )
        audit = AuditLog(DynamoAuditStore("audit", dynamodb()))
        service = AccessService(
            store=DynamoAccessStore("access", dynamodb()),
            artifacts=artifacts,
            kms=kms,
            audit=audit,
            security_engineer_role=ENGINEERS,
            scans=ScanStore("scans", dynamodb()),
            context_reader=vault_context_reader(s3),
        )
        yield SimpleNamespace(service=service, audit=audit, kms=kms, key_arn=key_arn, artifact=artifact)


def grants(access: SimpleNamespace) -> list[dict[str, Any]]:
    return access.kms.list_grants(KeyId=access.key_arn)["Grants"]  # type: ignore[no-any-return]


def writes_audit_action(action: str) -> Any:
    """DynamoDB calls that append an audit record of `action` (the chain's TransactWriteItems)."""
    on_audit = table_is("audit")
    return lambda params: on_audit(params) and f"'{action}'" in str(params)


FAILED_AFTER_THE_GRANT = {
    "grant-audit-record": ("dynamodb", "TransactWriteItems", writes_audit_action("grant.create")),
    "approved-request-write": ("dynamodb", "PutItem", table_is("access")),
}


@pytest.mark.parametrize("step", list(FAILED_AFTER_THE_GRANT), ids=list(FAILED_AFTER_THE_GRANT))
def test_an_approval_that_fails_after_its_grant_leaves_no_grant(
    access: SimpleNamespace, faults: Faults, step: str
) -> None:
    # Given a pending request
    request = access.service.request(access.artifact.artifact_id, requester=CONSUMER, reason="eval", hours=1)

    # When the approval's write after CreateGrant fails
    service, operation, when = FAILED_AFTER_THE_GRANT[step]
    faults.fail(service, operation, when=when)
    with pytest.raises(Exception):
        access.service.approve(request.request_id, approver=ALICE, reason="ticket")

    # Then the request is still pending and no grant lets the consumer decrypt
    assert access.service.get(request.request_id).status is RequestStatus.PENDING
    assert grants(access) == [], f"{step}: a KMS grant outlived the failed approval"

    # When the approval is repeated
    faults.clear()
    approved = access.service.approve(request.request_id, approver=ALICE, reason="ticket")

    # Then one grant, for the approved request, and the chain verifies
    assert approved.status is RequestStatus.APPROVED
    assert [g["GrantId"] for g in grants(access)] == [approved.grant_id]
    assert access.audit.verify().ok


def test_a_refused_grant_leaves_the_request_pending_and_is_audited(
    access: SimpleNamespace, faults: Faults
) -> None:
    # Given a pending request, and KMS refusing CreateGrant once
    request = access.service.request(access.artifact.artifact_id, requester=CONSUMER, reason="eval", hours=1)
    faults.fail("kms", "CreateGrant", code="KMSInternalException")

    # When a Security Engineer approves
    with pytest.raises(Exception, match="KMSInternalException"):
        access.service.approve(request.request_id, approver=ALICE)

    # Then nothing was granted, the request is pending, and the refusal is in the audit log
    assert grants(access) == [] and access.service.get(request.request_id).status is RequestStatus.PENDING
    errors = access.audit.list(AuditQuery(action="grant.create"))
    assert [r.decision for r in errors] == [Decision.ERROR]
    # And approving again works
    assert access.service.approve(request.request_id, approver=ALICE).status is RequestStatus.APPROVED


@pytest.mark.parametrize("approved", [True, False], ids=["approved", "pending"])
def test_no_decrypt_is_authorized_without_its_audit_record(
    access: SimpleNamespace, faults: Faults, approved: bool
) -> None:
    # Given a request (approved or not), and the audit table refusing every write
    request = access.service.request(access.artifact.artifact_id, requester=CONSUMER, reason="eval", hours=1)
    if approved:
        access.service.approve(request.request_id, approver=ALICE)
    faults.fail("dynamodb", "TransactWriteItems", when=table_is("audit"), times=None)

    # When the grantee asks to decrypt
    with pytest.raises(Exception) as refused:
        access.service.authorize_decrypt(request.request_id, principal=CONSUMER)

    # Then no authorization was handed out (no token), whatever the decision would have been
    assert "grant_token" not in str(refused.value)
    decrypts = access.audit.list(AuditQuery(action="artifact.decrypt"))
    assert decrypts == []

    # When the audit table recovers
    faults.clear()
    if approved:
        authorization = access.service.authorize_decrypt(request.request_id, principal=CONSUMER)
        assert authorization.grant_id == access.service.get(request.request_id).grant_id
    decisions = [r.decision for r in access.audit.list(AuditQuery(action="artifact.decrypt"))]
    assert decisions == ([Decision.ALLOWED] if approved else [])
    assert access.audit.verify().ok
