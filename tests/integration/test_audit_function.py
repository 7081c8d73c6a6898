"""AuditFunction with events/cloudtrail_*.json under moto: every KMS call lands in the chain once."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from modelshield.audit import AuditLog, AuditQuery, Decision
from modelshield.local.template import create_template_table
from modelshield.store.audit import DynamoAuditStore
from modelshield.wiring import dynamodb
from moto import mock_aws

from tests.builders import moto_credentials

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


def _load_app() -> Any:
    spec = importlib.util.spec_from_file_location("audit_function_app", ROOT / "functions/audit/app.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _context() -> Any:
    return SimpleNamespace(
        function_name="AuditFunction",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:AuditFunction",
        aws_request_id="req-1",
        get_remaining_time_in_millis=lambda: 30_000,
    )


def _event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    moto_credentials(monkeypatch)
    monkeypatch.setenv("AUDIT_TABLE", "audit")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ModelShieldTest")
    with mock_aws():
        create_template_table(boto3.client("dynamodb"), "AuditTable", "audit")
        yield _load_app()


def test_decrypt_success_denied_and_create_grant_are_recorded_with_their_decisions(app: Any) -> None:
    # Given the three sample CloudTrail events
    # When the AuditFunction handles each
    results = [
        app.lambda_handler(_event(name), _context())
        for name in (
            "cloudtrail_create_grant.json",
            "cloudtrail_decrypt_success.json",
            "cloudtrail_decrypt_denied.json",
        )
    ]
    # Then each became one audit record with the right action and decision
    assert [(r["seq"], r["action"], r["decision"]) for r in results] == [
        (1, "kms.CreateGrant", "ALLOWED"),
        (2, "kms.Decrypt", "ALLOWED"),
        (3, "kms.Decrypt", "DENIED"),
    ]
    log = AuditLog(DynamoAuditStore("audit", dynamodb()))
    artifact = "modelshield-ingest/models/resnet50.safetensors"
    denied = log.list(AuditQuery(decision=Decision.DENIED))
    assert len(denied) == 1
    assert denied[0].principal == "arn:aws:sts::123456789012:assumed-role/DataScientist/laptop"
    assert denied[0].artifact_id == artifact and denied[0].reason == "AccessDenied"
    assert denied[0].source == "cloudtrail"
    grant = log.list(AuditQuery(action="kms.CreateGrant"))[0]
    assert grant.detail["grantee"] == "arn:aws:iam::123456789012:role/InferenceService"
    assert grant.detail["grant_id"].startswith("0c2374")
    assert [r.seq for r in log.list(AuditQuery(artifact_id=artifact))] == [3, 2]
    assert log.verify().ok


def test_a_redelivered_event_is_recorded_once(app: Any) -> None:
    # Given a CloudTrail event already recorded
    first = app.lambda_handler(_event("cloudtrail_decrypt_success.json"), _context())
    # When EventBridge delivers it again
    again = app.lambda_handler(_event("cloudtrail_decrypt_success.json"), _context())
    # Then the second delivery returns the first record and the chain holds one record
    assert again["seq"] == first["seq"] == 1
    assert DynamoAuditStore("audit", dynamodb()).head().seq == 1  # type: ignore[union-attr]


def test_non_kms_events_are_ignored_and_malformed_ones_rejected(app: Any) -> None:
    # Given an EventBridge event from another service, and one missing its envelope fields
    other = copy.deepcopy(_event("cloudtrail_decrypt_success.json"))
    other["detail"]["eventSource"] = "s3.amazonaws.com"
    broken = {"detail": {"eventName": "Decrypt"}}
    # Then the first is ignored (nothing written) and the second fails loudly (retried, never dropped)
    assert app.lambda_handler(other, _context()) == {"recorded": False}
    with pytest.raises(Exception, match="validation"):
        app.lambda_handler(broken, _context())
    assert DynamoAuditStore("audit", dynamodb()).head() is None
