"""AuditAnchorFunction: copy the audit chain's head to the Object Lock anchor bucket.

Runs on every batch of audit appends (DynamoDB stream of the audit table, filtered to the head item) and
on a schedule; either way the event's content is irrelevant: it anchors the head as it is now. An
incident (chain rolled back or rewritten under the last anchor) is logged as an error and a metric.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.observability import logger, metrics, tracer


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = wiring.anchor_run()()
    # "message" is reserved by logging's LogRecord: the result's message goes out as "reason"
    fields = {("reason" if k == "message" else k): v for k, v in result.to_json().items()}
    metrics.add_metric(name="AuditAnchorRuns", unit=MetricUnit.Count, value=1)
    if result.status == "incident":
        metrics.add_metric(name="AuditAnchorIncident", unit=MetricUnit.Count, value=1)
        logger.error("audit chain not re-anchored", extra=fields)
    else:
        logger.info("audit anchor", extra=fields)
    return result.to_json()
