"""PlaintextSweepFunction: hourly, remove plaintext uploads whose group retention has passed.

Thin by design: `modelshield.plaintext.PlaintextLifetime.sweep` reads the due items of the retention
table, re-checks that each version's vault or quarantine copy is still recorded, removes the plaintext
version and records it in the audit log.
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
    counts = wiring.sweep()()
    for name, value in counts.items():
        metrics.add_metric(name=f"Plaintext_{name}", unit=MetricUnit.Count, value=value)
    logger.info("plaintext sweep", extra=counts)
    return counts
