"""Verdicts as EventBridge events, so that people and systems hear about a blocked model when it happens.

One event per recorded scan, published after the scan record is written (the record is the source of
truth; the event is the announcement): source `modelshield`, detail-type `ModelShield Verdict`, on the
stack's verdict bus (template.yaml: VerdictEventBus; the scan role may PutEvents there and nowhere else).
The NotReleasedVerdictRule sends BLOCKED and ERROR verdicts to the notification topic.

A failed publish never undoes or repeats the scan (the verdict is recorded either way, and re-running
the pipeline to resend an event would scan twice); it is logged as an error and counted in the
`VerdictEventFailed` metric, which has its own alarm.
"""

from __future__ import annotations

import json
from typing import Any

from modelshield.models import RuleStatus, ScanRecord

SOURCE = "modelshield"
DETAIL_TYPE = "ModelShield Verdict"
FAILED_METRIC = "VerdictEventFailed"


def verdict_detail(record: ScanRecord) -> dict[str, Any]:
    """The event's detail: which artifact version, which verdict, and the rules that failed."""
    failing = [r for r in record.rules if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]
    return {
        "artifact_id": record.artifact_id,
        "bucket": record.bucket,
        "key": record.key,
        "version_id": record.version_id,
        "sha256": record.sha256,
        "verdict": record.verdict.value,
        "group": record.group,
        "group_version": record.group_version,
        "failing_rules": [r.rule.value for r in failing],
        "blocking_rules": [r.rule.value for r in failing if r.blocking],
        "message": record.message,
        "encryption_state": record.encryption_state.value,
        "scan_id": record.scan_id,
        "trigger": record.trigger,
        "scanned_at": record.scanned_at.isoformat(),
    }


class VerdictPublisher:
    """Publishes verdict events on one bus; `events` is a boto3 EventBridge client."""

    def __init__(self, events: Any, bus_name: str) -> None:
        self.events = events
        self.bus_name = bus_name

    def publish(self, record: ScanRecord) -> str | None:
        """Put the event; return its id, or None after logging why it could not be published."""
        from modelshield.observability import logger, metrics

        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(verdict_detail(record), sort_keys=True),
            "EventBusName": self.bus_name,
            "Resources": [],
        }
        try:
            response = self.events.put_events(Entries=[entry])
            result = response.get("Entries", [{}])[0]
            if response.get("FailedEntryCount") or "EventId" not in result:
                raise RuntimeError(f"{result.get('ErrorCode')}: {result.get('ErrorMessage')}")
        except Exception as exc:  # the verdict is recorded; say loudly that its announcement is not
            logger.error(
                "verdict event not published",
                extra={"artifact_id": record.artifact_id, "scan_id": record.scan_id, "error": str(exc)},
            )
            metrics.add_metric(name=FAILED_METRIC, unit="Count", value=1)
            return None
        return str(result["EventId"])
