"""ScanFunction: S3 object-created events via SQS → scan, decide, encrypt, record (modelshield.pipeline).

Thin by design: the decorators wire logging, metrics and tracing; `modelshield.scan_batch` runs the
batch (partial failures, idempotency per object version, the time budget) over the Runtime that
`modelshield.wiring` builds from the validated settings once per container.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.observability import logger, metrics, tracer
from modelshield.scan_batch import ScanBatch

batch = ScanBatch(wiring.runtime())


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return batch.handle(event, context)
