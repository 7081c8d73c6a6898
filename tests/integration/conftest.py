"""Integration fixtures: the whole template on in-process moto, and the real ScanFunction handler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from modelshield.local.stack import load_handler
from modelshield.local.template import LocalProvisioner, load_template
from moto import mock_aws

from tests.builders import ROOT, MotoStack, moto_credentials


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    moto_credentials(
        monkeypatch, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_NAMESPACE="ModelShieldTest"
    )
    monkeypatch.setenv("WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("FRAME_LENGTH", "4096")  # several frames even for small test artifacts


@pytest.fixture
def moto_stack(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoStack]:
    from modelshield import config

    with mock_aws():
        cfg = Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        )
        clients = {
            "s3": boto3.client("s3", config=cfg),
            "sqs": boto3.client("sqs"),
            "dynamodb": boto3.client("dynamodb"),
            "kms": boto3.client("kms"),
            "ssm": boto3.client("ssm"),
            "events": boto3.client("events"),
        }
        out = LocalProvisioner(
            load_template(ROOT / "template.yaml"), stack_name="mstest", clients=clients
        ).provision()
        spec = out.functions["ScanFunction"]
        for name, value in spec.environment.items():
            monkeypatch.setenv(name, value)
        config.scan_settings.cache_clear()
        handler = load_handler(spec)
        yield MotoStack(
            env=dict(os.environ),
            s3=clients["s3"],
            sqs=clients["sqs"],
            kms=clients["kms"],
            dynamodb=boto3.resource("dynamodb"),
            handler=handler,
            queue_url=out.names["ScanQueue"],
            queue_arn=out.arns["ScanQueue"],
            provisioned=out,
        )
        config.scan_settings.cache_clear()
