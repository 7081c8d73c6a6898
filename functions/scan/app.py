"""ScanFunction: S3 object-created events via SQS → scan, decide, encrypt, record (modelshield.pipeline).

Thin by design: the decorators wire logging, metrics and tracing; BatchProcessor reports partial failures
so one bad record never fails its batch-mates; Powertools Idempotency (keyed by bucket + key + versionId)
makes a redelivered event a no-op. All logic lives in the layer's `modelshield.pipeline`.
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
from modelshield.config import scan_settings
from modelshield.events import ObjectEvent, object_events
from modelshield.observability import logger, metrics, tracer
from modelshield.pipeline import Runtime, process_object, resolve_version

# Seconds a record needs at least: below this, fail it back to the queue rather than be cut off mid-write.
MIN_SECONDS_PER_RECORD = 60

settings = scan_settings()
runtime = Runtime.from_settings(settings)
processor = BatchProcessor(event_type=EventType.SQS)
idempotency = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version_id, request_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=7 * 24 * 3600,
)
persistence = DynamoDBPersistenceLayer(table_name=settings.tables.idempotency)
_context: LambdaContext | None = None


def _remaining_seconds() -> float | None:
    return _context.get_remaining_time_in_millis() / 1000 if _context is not None else None


@idempotent_function(data_keyword_argument="event", config=idempotency, persistence_store=persistence)
def scan_object(event: dict[str, Any]) -> dict[str, Any]:
    remaining = _remaining_seconds()
    budget = None if remaining is None else max(1.0, (remaining - MIN_SECONDS_PER_RECORD) / 2)
    parsed = ObjectEvent.model_validate(event)
    record = process_object(parsed, runtime, trigger=parsed.trigger, time_budget_s=budget)
    metrics.add_metric(
        name=f"Verdict{record.verdict.value.title().replace('_', '')}", unit=MetricUnit.Count, value=1
    )
    return {"scan_id": record.scan_id, "verdict": record.verdict.value, "version_id": record.version_id}


def record_handler(record: SQSRecord) -> None:
    remaining = _remaining_seconds()
    if remaining is not None and remaining < MIN_SECONDS_PER_RECORD:
        raise TimeoutError("not enough time left in this invocation; returning the message to the queue")
    for event in object_events(record.body):
        pinned = resolve_version(runtime.s3, event)
        scan_object(event=pinned.model_dump(mode="json"))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _context
    _context = context
    idempotency.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
