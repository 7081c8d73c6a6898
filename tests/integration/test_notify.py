"""Verdict events on EventBridge (moto): the detail names the artifact, verdict, group and failing rules;
a publish that fails is logged and counted, never raised into the pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from modelshield.models import Finding, RuleId, RuleResult, RuleStatus, ScanRecord, Severity, Verdict
from modelshield.notify import DETAIL_TYPE, SOURCE, VerdictPublisher
from moto import mock_aws

from tests.builders import moto_credentials


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, str]]:
    moto_credentials(monkeypatch)
    with mock_aws():
        events, sqs = boto3.client("events"), boto3.client("sqs")
        events.create_event_bus(Name="verdicts")
        url = sqs.create_queue(QueueName="seen")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        pattern = {
            "source": [SOURCE],
            "detail-type": [DETAIL_TYPE],
            "detail": {"verdict": ["BLOCKED", "ERROR"]},
        }
        events.put_rule(Name="not-released", EventBusName="verdicts", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="not-released", EventBusName="verdicts", Targets=[{"Id": "q", "Arn": arn}])
        yield events, sqs, url


def record(verdict: Verdict) -> ScanRecord:
    failed = RuleResult(
        rule=RuleId.CODE_EXEC,
        status=RuleStatus.FAIL,
        blocking=True,
        severity=Severity.CRITICAL,
        message="pickle imports os.system",
        findings=[Finding(rule=RuleId.CODE_EXEC, severity=Severity.CRITICAL, message="os.system")],
    )
    passed = RuleResult(rule=RuleId.LICENSE, status=RuleStatus.PASS, blocking=False, severity=Severity.LOW)
    return ScanRecord(
        artifact_id="ingest/models/evil.pkl",
        scan_ref="2026-12-02T00:00:00#v1#s1",
        scan_id="s1",
        bucket="ingest",
        key="models/evil.pkl",
        version_id="v1",
        sha256="ab" * 32,
        size=41,
        format="pickle",
        verdict=verdict,
        group="S3-Production",
        group_version=3,
        rules=[failed, passed] if verdict is Verdict.BLOCKED else [passed],
        findings=[],
        scanner_version="test",
        scanned_at=datetime(2026, 12, 2, tzinfo=UTC),
        message="blocked by MS-CODE-EXEC",
    )


def test_a_blocked_verdict_reaches_the_rule_with_artifact_group_and_failing_rules(
    bus: tuple[Any, Any, str],
) -> None:
    events, sqs, url = bus
    publisher = VerdictPublisher(events, "verdicts")
    # When a BLOCKED and an ALLOWED verdict are published
    assert publisher.publish(record(Verdict.BLOCKED))
    assert publisher.publish(record(Verdict.ALLOWED))
    # Then only the BLOCKED one matches the not-released rule, with everything a notification needs
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    assert len(messages) == 1
    event = json.loads(messages[0]["Body"])
    assert event["source"] == "modelshield" and event["detail-type"] == "ModelShield Verdict"
    detail = event["detail"]
    assert detail["verdict"] == "BLOCKED" and detail["artifact_id"] == "ingest/models/evil.pkl"
    assert (
        detail["version_id"] == "v1" and detail["group"] == "S3-Production" and detail["group_version"] == 3
    )
    assert detail["failing_rules"] == ["MS-CODE-EXEC"] and detail["blocking_rules"] == ["MS-CODE-EXEC"]


def test_a_failed_publish_is_logged_and_counted_not_raised(
    bus: tuple[Any, Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    events, _, _ = bus
    # Given a bus that does not exist
    publisher = VerdictPublisher(events, "no-such-bus")
    # When a verdict is published, Then it returns None and says so in the log
    assert publisher.publish(record(Verdict.BLOCKED)) is None
    (logged,) = [r for r in caplog.records if r.getMessage() == "verdict event not published"]
    assert logged.levelname == "ERROR" and logged.artifact_id == "ingest/models/evil.pkl"
    assert "no-such-bus" in logged.error
