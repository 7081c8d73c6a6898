"""JobWorkerFunction: every bulk-job step (discover, a Map batch, settle) as an SQS message with a task token.

Thin by design: BatchProcessor reports partial failures; `modelshield.jobs.worker.handle_message` runs the
step and answers the token itself (success, or a named failure the state machine retries or catches).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.jobs.worker import handle_message
from modelshield.observability import logger, metrics, tracer

runtime = wiring.job_runtime()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    handle_message(record.body, runtime)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
