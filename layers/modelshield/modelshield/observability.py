"""The only Logger, Tracer and Metrics instances (Powertools). Everything logs through these."""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

# An invocation that records no verdict (S3's test event, a duplicate delivery, a KMS event the audit
# function ignores) has no metrics to flush, and Powertools warns about that on every such invocation,
# into the Lambda and the local stack's logs. Nothing is wrong in that case, so exactly that warning goes.
warnings.filterwarnings(
    "ignore",
    message="No application metrics to publish",
    category=UserWarning,
    module="aws_lambda_powertools",
)

logger = Logger(service="modelshield")
tracer = Tracer(service="modelshield")
metrics = Metrics(namespace="ModelShield", service="modelshield")
