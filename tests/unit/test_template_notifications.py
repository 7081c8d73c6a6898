"""Notifications in template.yaml, read as data: the verdict bus, who may publish to it, the rule that
turns BLOCKED/ERROR verdicts into notifications, and the alarms on the dead-letter queue and ERROR verdicts.

moto emulates neither IAM nor CloudWatch alarms, so the template itself is the thing under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from modelshield.local.template import load_template
from modelshield.models import Verdict

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return load_template(TEMPLATE)["Resources"]


def _statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in resource.get("Properties", {}).get("Policies", []):
        if isinstance(policy, dict):
            out.extend(policy.get("Statement", []))
    return out


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return action if isinstance(action, list) else [action]


def test_only_the_functions_that_record_verdicts_put_events_and_only_on_the_verdict_bus(
    resources: dict[str, Any],
) -> None:
    # Given every function's inline policies
    publishers = {}
    for logical, resource in resources.items():
        for statement in _statements(resource):
            if any(a in ("events:PutEvents", "events:*", "*") for a in _actions(statement)):
                publishers.setdefault(logical, []).append(statement["Resource"])
    # Then the scan and rescan functions (the two that record verdicts) alone publish, on exactly the bus
    bus = [{"Fn::GetAtt": ["VerdictEventBus", "Arn"]}]
    assert publishers == {"ScanFunction": bus, "RescanFunction": bus}
    assert resources["VerdictEventBus"]["Type"] == "AWS::Events::EventBus"
    for function in publishers:
        env = resources[function]["Properties"]["Environment"]["Variables"]
        assert env["VERDICT_EVENT_BUS"] == {"Ref": "VerdictEventBus"}


def test_blocked_and_error_verdicts_reach_the_topic(resources: dict[str, Any]) -> None:
    rule = resources["NotReleasedVerdictRule"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "VerdictEventBus"}
    not_released = sorted(v.value for v in Verdict if not v.releases)
    assert sorted(rule["EventPattern"]["detail"]["verdict"]) == not_released
    assert rule["EventPattern"]["detail-type"] == ["ModelShield Verdict"]
    assert [t["Arn"] for t in rule["Targets"]] == [{"Ref": "NotificationTopic"}]
    # And the topic accepts EventBridge only from that rule
    policy = resources["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    from_events = [s for s in policy if s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert from_events and all(
        s["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["NotReleasedVerdictRule", "Arn"]}}}
        for s in from_events
    )


def test_the_dead_letter_queue_alarm_fires_on_one_message(resources: dict[str, Any]) -> None:
    alarm = resources["DeadLetterQueueAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS" and alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ScanDeadLetterQueue", "QueueName"]}}
    ]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "NotificationTopic"}]


def test_a_verdict_event_that_could_not_be_published_raises_an_alarm(resources: dict[str, Any]) -> None:
    from modelshield.notify import FAILED_METRIC

    alarm = resources["VerdictEventFailureAlarm"]["Properties"]
    assert alarm["MetricName"] == FAILED_METRIC and alarm["Namespace"] == "ModelShield"
    assert alarm["AlarmActions"] == [{"Ref": "NotificationTopic"}]


def test_the_error_verdict_alarm_watches_the_metric_the_scan_function_emits(
    resources: dict[str, Any],
) -> None:
    # The scan batch names its metric Verdict<Title> (modelshield/scan_batch.py): VerdictError for ERROR
    batch = (TEMPLATE.parent / "layers" / "modelshield" / "modelshield" / "scan_batch.py").read_text()
    assert "name=f\"Verdict{record.verdict.value.title().replace('_', '')}\"" in batch
    expected = f"Verdict{Verdict.ERROR.value.title().replace('_', '')}"
    alarm = resources["ErrorVerdictAlarm"]["Properties"]
    assert alarm["MetricName"] == expected == "VerdictError"
    assert alarm["Namespace"] == "ModelShield"  # POWERTOOLS_METRICS_NAMESPACE
    assert {"Name": "service", "Value": "modelshield"} in alarm["Dimensions"]  # POWERTOOLS_SERVICE_NAME
    assert alarm["AlarmActions"] == [{"Ref": "NotificationTopic"}]
