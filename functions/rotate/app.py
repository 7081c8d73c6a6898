"""RotateFunction: the scheduled key-rotation run (EventBridge schedule → modelshield.rotation).

Thin by design: the schedule's event carries nothing but an optional `{"dry_run": true}` (a constant
Input on the rule, or a manual invoke); the run stops on its own before the Lambda timeout and leaves a
checkpoint that the next scheduled run resumes from.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.observability import logger, metrics, tracer
from modelshield.rotation import Rotator


@lru_cache(maxsize=1)
def rotator() -> Rotator:
    return wiring.rotator(principal="RotateFunction")


def _dry_run(event: dict[str, Any]) -> bool:
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    return bool(event.get("dry_run") or (detail or {}).get("dry_run"))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = rotator().run(dry_run=_dry_run(event), remaining_ms=context.get_remaining_time_in_millis)
    counts = report.counts()
    for name, value in counts.items():
        metrics.add_metric(name=f"Rotation_{name}", unit=MetricUnit.Count, value=value)
    logger.info("rotation run", extra={"run_id": report.run_id, "complete": report.complete, **counts})
    return {
        "run_id": report.run_id,
        "dry_run": report.dry_run,
        "complete": report.complete,
        "counts": counts,
        "keys_without_rotation": report.keys_without_rotation,
        "failures": report.failures,
        "deferred": report.deferred,
    }
