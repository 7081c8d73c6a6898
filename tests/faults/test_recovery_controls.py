"""template.yaml carries what the recovery path relies on: the last attempt is the queue's last receive,
a DLQ message or an ERROR-after-retries raises an alarm, and the scan role may fail a tag closed."""

from __future__ import annotations

from typing import Any

import pytest
from modelshield.local.template import load_template
from modelshield.recovery import FAILED_METRIC

from tests.builders import ROOT


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")["Resources"]


def test_the_scan_function_knows_the_queues_max_receive_count(resources: dict[str, Any]) -> None:
    redrive = resources["ScanQueue"]["Properties"]["RedrivePolicy"]
    env = resources["ScanFunction"]["Properties"]["Environment"]["Variables"]
    assert int(env["MAX_RECEIVE_COUNT"]) == int(redrive["maxReceiveCount"])


def test_dead_letters_and_failed_scans_raise_alarms(resources: dict[str, Any]) -> None:
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    on_dlq = [
        a for a in alarms if a["Namespace"] == "AWS/SQS" and "ScanDeadLetterQueue" in str(a["Dimensions"])
    ]
    on_errors = [a for a in alarms if a["Namespace"] == "ModelShield" and a["MetricName"] == FAILED_METRIC]
    assert on_dlq and on_errors
    for alarm in on_dlq + on_errors:  # one message, one failed scan is enough to alarm
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) in (
            (0, "GreaterThanThreshold"),
            (1, "GreaterThanOrEqualToThreshold"),
        )


def test_the_scan_role_may_remove_a_verdict_tag_it_cannot_rewrite(resources: dict[str, Any]) -> None:
    statements = resources["ScanFunction"]["Properties"]["Policies"][0]["Statement"]
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {"s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging", "s3:PutObjectTagging"} <= actions
