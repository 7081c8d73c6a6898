"""AuditFunction: KMS calls seen by CloudTrail (via an EventBridge rule) → the hash-chained audit log.

Thin by design: Powertools' parser validates the EventBridge envelope, `record_cloudtrail_event` maps the
CloudTrail record to one audit record, deduplicated by CloudTrail's eventID (EventBridge delivers at least
once). A failed write raises, so the asynchronous invocation is retried and then sent to the
function's on-failure destination: an audit event is never dropped silently.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.audit import AuditLog, record_cloudtrail_event
from modelshield.observability import logger, metrics, tracer


@lru_cache(maxsize=1)
def audit_log() -> AuditLog:
    return wiring.audit_log()


@event_parser(model=EventBridgeModel)
def _handle(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    record = record_cloudtrail_event(audit_log(), event.detail)
    if record is None:
        logger.info("event ignored", extra={"detail_type": event.detail_type, "source": event.source})
        return {"recorded": False}
    metrics.add_metric(name=f"KmsEvent{record.decision.value.title()}", unit=MetricUnit.Count, value=1)
    logger.info("audit record written", extra={"seq": record.seq, "action": record.action})
    return {"recorded": True, "seq": record.seq, "action": record.action, "decision": record.decision.value}


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _handle(event, context)
