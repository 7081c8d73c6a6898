"""MetricsFunction's work: fold DynamoDB stream records from the artifacts, scans and audit tables into
the counters, in order, once each.

Order matters only for the audit chain (each link is checked against the previous one), and a stream
shard delivers in order; so a batch is processed front to back and stops at the first failure, which is
reported as the batch item failure: Lambda retries from there, and records already applied are skipped
by their once-only markers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from modelshield.config import MetricsSettings
from modelshield.dashboard.chain import ChainFinding, chain_step, tamper_finding
from modelshield.dashboard.counters import Delta, artifact_delta, audit_delta, scan_delta
from modelshield.observability import logger
from modelshield.store.audit import CHAIN_PK, record_from_item
from modelshield.store.metrics import MetricsStore

_deserializer = TypeDeserializer()


def image(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A stream image (DynamoDB JSON) as plain values."""
    if not raw:
        return None
    return {k: _deserializer.deserialize(v) for k, v in raw.items()}


def table_name_of(event_source_arn: str) -> str:
    """`arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>` → `<name>`."""
    _, _, rest = event_source_arn.partition(":table/")
    return rest.split("/", 1)[0]


def changed_at(record: Mapping[str, Any]) -> datetime:
    value = (record.get("dynamodb") or {}).get("ApproximateCreationDateTime")
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.now(UTC)


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    failed_sequence: str | None = None

    def response(self) -> dict[str, Any]:
        failures = [] if self.failed_sequence is None else [{"itemIdentifier": self.failed_sequence}]
        return {"batchItemFailures": failures}


class StreamFolder:
    def __init__(self, settings: MetricsSettings, store: MetricsStore) -> None:
        self.settings = settings
        self.store = store

    def process(self, records: Sequence[Mapping[str, Any]]) -> BatchResult:
        result = BatchResult()
        for record in records:
            try:
                outcome = self.fold(record)
            except Exception:
                logger.exception("stream record not applied; the batch is retried from here")
                result.failed_sequence = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
                return result
            if outcome is None:
                result.ignored += 1
            elif outcome:
                result.applied += 1
            else:
                result.duplicates += 1
        return result

    def fold(self, record: Mapping[str, Any]) -> bool | None:
        """Apply one stream record. None: nothing to count; False: applied before (a replay)."""
        table = table_name_of(str(record.get("eventSourceARN", "")))
        change = record.get("dynamodb") or {}
        old, new = image(change.get("OldImage")), image(change.get("NewImage"))
        event_name = str(record.get("eventName", ""))
        event_id = str(record.get("eventID", ""))
        now = datetime.now(UTC)
        if table == self.settings.artifacts_table:
            delta = artifact_delta(old, new, changed_at=changed_at(record))
            return self.store.apply(event_id, delta, now=now) if delta else None
        if table == self.settings.scans_table:
            if event_name != "INSERT" or new is None:
                return None  # scans are append-only; the scan table's own condition refuses rewrites
            return self.store.apply(event_id, scan_delta(new), now=now)
        if table == self.settings.audit_table:
            return self._fold_audit(event_id, event_name, old, new, now)
        return None

    def _fold_audit(
        self,
        event_id: str,
        event_name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        now: datetime,
    ) -> bool | None:
        item = new or old or {}
        if item.get("pk") != CHAIN_PK:
            return None  # the head, idempotency markers and checkpoints change by design
        if event_name != "INSERT":
            old_record = _record_or_none(old)
            finding = tamper_finding(event_name, old_record, int(item.get("seq", 0)))
            logger.warning("audit chain changed after it was written", extra={"finding": finding.message})
            return self.store.apply(event_id, Delta(), now=now, findings=[finding])
        record = record_from_item(dict(item))
        expected, _ = self.store.chain_state()
        state, findings = chain_step(expected, record)
        chain = (expected, state) if state != expected else None
        return self.store.apply(event_id, audit_delta(item), now=now, chain=chain, findings=findings)


def _record_or_none(item: dict[str, Any] | None) -> Any:
    if not item:
        return None
    try:
        return record_from_item(dict(item))
    except Exception:  # a mangled old image is still evidence of a change
        return None


__all__ = ["BatchResult", "ChainFinding", "StreamFolder", "changed_at", "image", "table_name_of"]
