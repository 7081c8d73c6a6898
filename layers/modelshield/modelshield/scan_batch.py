"""One SQS batch of object-created events → one pipeline run per object version, each exactly once.

What the ScanFunction's handler delegates to: BatchProcessor reports partial failures so one bad record
never fails its batch-mates; Powertools Idempotency (keyed by bucket + key + versionId + request id)
makes a redelivered event a no-op; a record that arrives with too little time left goes back to the
queue rather than being cut off mid-write; the attempt that reaches the queue's maxReceiveCount records
an ERROR verdict (modelshield.recovery), so nothing reaches the dead-letter queue silently.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelshield.events import ObjectEvent, object_events
from modelshield.observability import metrics
from modelshield.pipeline import Runtime, process_object, resolve_version
from modelshield.recovery import last_attempt_recorded

# Seconds a record needs at least: below this, fail it back to the queue rather than be cut off mid-write.
MIN_SECONDS_PER_RECORD = 60
IDEMPOTENCY_SECONDS = 7 * 24 * 3600


class ScanBatch:
    """The ScanFunction's work, built once per container around one Runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.processor = BatchProcessor(event_type=EventType.SQS)
        self.idempotency = IdempotencyConfig(
            event_key_jmespath="[bucket, key, version_id, request_id]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_SECONDS,
        )
        persistence = DynamoDBPersistenceLayer(table_name=runtime.settings.tables.idempotency)
        self.scan_object = idempotent_function(
            data_keyword_argument="event", config=self.idempotency, persistence_store=persistence
        )(self._scan_object)
        self._context: LambdaContext | None = None

    def handle(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        self._context = context
        self.idempotency.register_lambda_context(context)
        return process_partial_response(
            event=event, record_handler=self._record, processor=self.processor, context=context
        )

    def _remaining_seconds(self) -> float | None:
        return self._context.get_remaining_time_in_millis() / 1000 if self._context is not None else None

    def _record(self, record: SQSRecord) -> None:
        remaining = self._remaining_seconds()
        if remaining is not None and remaining < MIN_SECONDS_PER_RECORD:
            raise TimeoutError("not enough time left in this invocation; returning the message to the queue")
        attempt = int(record.raw_event.get("attributes", {}).get("ApproximateReceiveCount") or 1)
        for event in object_events(record.body):
            # the queue's last attempt records an ERROR verdict before the message goes to the DLQ
            with last_attempt_recorded(self.runtime, event, attempt=attempt):
                pinned = resolve_version(self.runtime.s3, event)
                self.scan_object(event=pinned.model_dump(mode="json"))

    def _scan_object(self, event: dict[str, Any]) -> dict[str, Any]:
        remaining = self._remaining_seconds()
        budget = None if remaining is None else max(1.0, (remaining - MIN_SECONDS_PER_RECORD) / 2)
        parsed = ObjectEvent.model_validate(event)
        record = process_object(parsed, self.runtime, trigger=parsed.trigger, time_budget_s=budget)
        if self.runtime.publisher is not None:  # the record is written: now say so (BLOCKED/ERROR notify)
            self.runtime.publisher.publish(record)
        metrics.add_metric(
            name=f"Verdict{record.verdict.value.title().replace('_', '')}", unit=MetricUnit.Count, value=1
        )
        return {"scan_id": record.scan_id, "verdict": record.verdict.value, "version_id": record.version_id}
