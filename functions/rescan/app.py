"""RescanFunction: rescan work items via SQS → the same pipeline, judging the vault copy, not the upload.

Thin by design: the batch logic is the ScanFunction's (`modelshield.scan_batch`); the Runtime differs in
one thing: it decrypts the recorded vault (or quarantine) copy into this function's ephemeral storage,
because the plaintext upload is removed once that copy is verified. This role may decrypt for that
purpose only (key policy), and reads nothing of the ingest bucket but signatures and model cards.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.observability import logger, metrics, tracer
from modelshield.scan_batch import ScanBatch

batch = ScanBatch(wiring.runtime(read_vault=True))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return batch.handle(event, context)
