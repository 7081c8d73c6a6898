"""The only Logger, Tracer and Metrics instances (Powertools). Everything logs through these."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="modelshield")
tracer = Tracer(service="modelshield")
metrics = Metrics(namespace="ModelShield", service="modelshield")
