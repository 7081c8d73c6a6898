"""MetricsFunction: DynamoDB stream records (artifacts, scans, audit) → the dashboard's counters.

Thin by design: `StreamFolder` applies each record once and in order, and the first failure is returned
as the batch item failure so Lambda retries from there (ReportBatchItemFailures in template.yaml).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.dashboard.aggregate import StreamFolder
from modelshield.observability import logger, metrics


@lru_cache(maxsize=1)
def folder() -> StreamFolder:
    return wiring.metrics_folder()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = folder().process(event.get("Records", []))
    metrics.add_metric(name="CountersApplied", unit=MetricUnit.Count, value=result.applied)
    if result.failed_sequence is not None:
        metrics.add_metric(name="CounterBatchRetried", unit=MetricUnit.Count, value=1)
    return result.response()
