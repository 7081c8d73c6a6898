"""ApiFunction with events/api_*.json under moto: IAM identity, validation, statuses, access and audit."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from modelshield.access import AccessService, DecryptAuthorization, decrypt_authorized, vault_context_reader
from modelshield.api import use_services
from modelshield.audit import AuditLog
from modelshield.store.access import DynamoAccessStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore
from modelshield.store.scans import ScanStore
from modelshield.wiring import ApiServices, dynamodb

from tests.builders import encrypted_allowed_artifact, keys_and_access_account, moto_credentials

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = "modelshield-ingest/models/resnet50.safetensors"
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc"
ALICE = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"


def _event(
    name: str, *, user: str | None = None, body: Any = None, path: str | None = None
) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((ROOT / "events" / name).read_text()))
    if user is not None:
        event["requestContext"]["identity"]["userArn"] = user
    if body is not None:
        event["body"] = json.dumps(body)
    if path is not None:
        event["path"] = path
    return event


def _context() -> Any:
    return SimpleNamespace(
        function_name="ApiFunction",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:ApiFunction",
        aws_request_id="api-1",
        get_remaining_time_in_millis=lambda: 29_000,
    )


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    moto_credentials(
        monkeypatch, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_NAMESPACE="ModelShieldTest"
    )
    with keys_and_access_account("vault") as s3:
        kms = boto3.client("kms")
        key_arn = kms.create_key()["KeyMetadata"]["Arn"]
        bucket, key = ARTIFACT.split("/", 1)
        artifacts = ArtifactStore("artifacts", dynamodb())
        encrypted_allowed_artifact(
            s3=s3,
            kms=kms,
            artifacts=artifacts,
            key_arn=key_arn,
            name=key,
            data=os.urandom(20_000),
            vault="vault",
            now=datetime(2026, 11, 20, tzinfo=UTC),
            group="g",
            ingest=bucket,
            vault_key=key,
        )
        audit = AuditLog(DynamoAuditStore("audit", dynamodb()))
        service = AccessService(
            store=DynamoAccessStore("access", dynamodb()),
            artifacts=artifacts,
            kms=kms,
            audit=audit,
            security_engineer_role="arn:aws:iam::*:role/ModelShieldSecurityEngineer",
            scans=ScanStore("scans", dynamodb()),
            context_reader=vault_context_reader(s3),
        )
        use_services(ApiServices(access=service, audit=audit))
        spec = importlib.util.spec_from_file_location("api_function_app", ROOT / "functions/api/app.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        try:
            yield SimpleNamespace(call=lambda e: _call(module, e), kms=kms, key_arn=key_arn)
        finally:
            use_services(None)


def _call(module: Any, event: dict[str, Any]) -> tuple[int, Any]:
    response = module.lambda_handler(event, _context())
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


def test_request_approve_and_audit_over_the_api(api: Any) -> None:
    # Given a consumer's request made through the API (the requester comes from the IAM identity)
    status, created = api.call(_event("api_access_request.json"))
    assert status == 201
    assert created["requester"] == CONSUMER and created["status"] == "PENDING"
    request_id = created["request_id"]
    approve_path = f"/access/requests/{request_id}/approve"

    # When the requester approves their own request, the API refuses with 403 and a clear message
    status, body = api.call(_event("api_access_approve.json", user=CONSUMER, path=approve_path))
    assert status == 403 and "not a Security Engineer" in body["message"]

    # When a Security Engineer approves it
    status, approved = api.call(_event("api_access_approve.json", path=approve_path))
    # Then it is approved, the grant exists, and the token is not exposed
    assert status == 200 and approved["status"] == "APPROVED" and approved["decided_by"] == ALICE
    assert "grant_token" not in approved
    assert len(api.kms.list_grants(KeyId=api.key_arn)["Grants"]) == 1

    # And deciding again is a conflict; an unknown request is 404
    status, body = api.call(_event("api_access_approve.json", path=approve_path))
    assert status == 409 and "already APPROVED" in body["message"]
    status, _ = api.call(_event("api_access_deny.json", path="/access/requests/req-missing/deny"))
    assert status == 404

    # And list and audit routes show the state and the trail
    status, listed = api.call(_event("api_access_list.json"))
    assert status == 200 and listed["requests"] == []  # nothing pending any more
    status, records = api.call(_event("api_audit_list.json"))
    assert status == 200
    assert [(r["action"], r["decision"]) for r in records["records"]] == [
        ("grant.create", "ALLOWED"),
        ("access.approve", "ALLOWED"),
        ("access.approve", "DENIED"),
        ("access.request", "ALLOWED"),
    ]
    status, verified = api.call(_event("api_audit_verify.json"))
    assert status == 200 and verified["ok"] is True and verified["checked"] == 4


def test_invalid_bodies_and_missing_identity_are_rejected(api: Any) -> None:
    # Given malformed requests
    too_long = {"artifact_id": ARTIFACT, "reason": "x", "hours": 100_000}
    extra = {"artifact_id": ARTIFACT, "reason": "x", "hours": 1, "requester": ALICE}
    no_identity = _event("api_access_request.json")
    no_identity["requestContext"]["identity"]["userArn"] = None
    # Then validation answers 422, and an unauthenticated call 403, without creating anything
    assert api.call(_event("api_access_request.json", body=too_long))[0] == 422
    assert api.call(_event("api_access_request.json", body=extra))[0] == 422  # no impersonation by body
    status, body = api.call(no_identity)
    assert status == 403 and "no IAM identity" in body["message"]
    status, listed = api.call(_event("api_access_list.json", path="/access/requests"))
    assert status == 200 and listed["requests"] == []


def test_mine_lists_the_verified_callers_requests_whatever_the_query_claims(api: Any) -> None:
    # Given one request by the consumer and one by a Security Engineer
    assert api.call(_event("api_access_request.json"))[0] == 201
    assert api.call(_event("api_access_request.json", user=ALICE))[0] == 201

    def listed(user: str, query: dict[str, str]) -> list[str]:
        event = _event("api_access_list.json", user=user)
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        status, body = api.call(event)
        assert status == 200, body
        return [r["requester"] for r in body["requests"]]

    # When each asks for their own, Then each sees only the requests the signature names
    assert listed(CONSUMER, {"mine": "true"}) == [CONSUMER]
    assert listed(ALICE, {"mine": "true"}) == [ALICE]
    # And `mine` wins over a requester named in the query (no listing as somebody else's "mine")
    assert listed(CONSUMER, {"mine": "true", "requester": ALICE}) == [CONSUMER]
    assert sorted(listed(CONSUMER, {})) == sorted([CONSUMER, ALICE])


def test_decrypt_is_authorized_by_the_api_for_the_grantee_only_and_audited(api: Any, tmp_path: Path) -> None:
    # Given a consumer's request, approved by a Security Engineer
    status, created = api.call(_event("api_access_request.json"))
    assert status == 201
    request_id = created["request_id"]
    assert (
        api.call(_event("api_access_approve.json", path=f"/access/requests/{request_id}/approve"))[0] == 200
    )
    authorize = f"/access/requests/{request_id}/authorize-decrypt"
    report = f"/access/requests/{request_id}/decrypt-error"

    # When someone else asks for the decrypt authorization, Then 403, and no token
    status, body = api.call(_event("api_access_authorize_decrypt.json", user=ALICE, path=authorize))
    assert (
        status == 403
        and "the grant is for arn:aws:iam::123456789012:role/InferenceService" in body["message"]
    )
    assert "grant_token" not in body

    # When the grantee asks, Then the API returns the grant token, the vault copy and what it must match
    status, authorization = api.call(_event("api_access_authorize_decrypt.json", path=authorize))
    assert status == 200, authorization
    assert (
        authorization["grantee"] == "arn:aws:iam::123456789012:role/InferenceService"
        and authorization["grant_token"]
    )
    assert (authorization["vault_bucket"], authorization["vault_key"]) == ("vault", ARTIFACT.split("/", 1)[1])
    # and with it the consumer's own KMS client decrypts the vault copy to the recorded digest
    granted = DecryptAuthorization.model_validate(authorization)
    sha = decrypt_authorized(granted, tmp_path / "model.bin", kms=api.kms, s3=boto3.client("s3"))
    assert sha == authorization["sha256"]

    # And only the grantee may report a failed decrypt (nobody writes about another's grant)
    status, body = api.call(
        _event("api_access_authorize_decrypt.json", user=ALICE, path=report, body={"reason": "x"})
    )
    assert status == 403 and "only the grantee" in body["message"]
    assert (
        api.call(_event("api_access_authorize_decrypt.json", path=report, body={"reason": "disk full"}))[0]
        == 204
    )

    # And every attempt is in the audit chain, under the identity the API verified
    status, records = api.call(_event("api_audit_list.json"))
    decrypts = [
        (r["decision"], r["principal"]) for r in records["records"] if r["action"] == "artifact.decrypt"
    ]
    assert decrypts == [("ERROR", CONSUMER), ("ALLOWED", CONSUMER), ("DENIED", ALICE)]
    assert api.call(_event("api_audit_verify.json"))[1]["ok"] is True
