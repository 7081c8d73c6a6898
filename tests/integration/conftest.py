"""Integration fixtures: the whole template on in-process moto, and the real ScanFunction handler."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from modelshield.aws import s3_client
from modelshield.local.stack import LocalContext, load_handler, sqs_record
from modelshield.local.template import LocalProvisioner, create_template_table, load_template
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


@dataclass
class MotoStack:
    env: dict[str, str]
    s3: Any
    sqs: Any
    kms: Any
    dynamodb: Any
    handler: Any
    queue_url: str
    queue_arn: str
    provisioned: Any = None

    @property
    def ingest(self) -> str:
        return self.env["INGEST_BUCKET"]

    @property
    def vault(self) -> str:
        return self.env["VAULT_BUCKET"]

    def invoke(self, event: dict[str, Any], timeout: int = 900) -> dict[str, Any]:
        return self.handler(event, LocalContext("ScanFunction", 3008, timeout))

    def deliver_queued(self) -> dict[str, Any]:
        """Receive what S3 sent to the scan queue and hand it to the handler as Lambda would."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        messages = [m for m in messages if json.loads(m["Body"]).get("Event") != "s3:TestEvent"]
        return self.invoke({"Records": [sqs_record(m, self.queue_arn) for m in messages]})

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        return self.s3.put_object(Bucket=self.ingest, Key=key, Body=body, **kwargs)["VersionId"]

    def table(self, env_name: str) -> Any:
        return self.dynamodb.Table(self.env[env_name])


def s3_event(
    stack: MotoStack, key: str, version_id: str | None, template: str = "s3_put_via_sqs.json"
) -> dict:
    """A sample event from events/, pointed at this stack's bucket and an uploaded object version."""
    from urllib.parse import quote_plus

    event = json.loads((EVENTS / template).read_text())
    for record in event["Records"]:
        body = json.loads(record["body"])
        s3 = body["Records"][0]["s3"]
        s3["bucket"]["name"] = stack.ingest
        s3["bucket"]["arn"] = f"arn:aws:s3:::{stack.ingest}"
        s3["object"]["key"] = quote_plus(key, safe="/")
        if version_id is None:
            s3["object"].pop("versionId", None)
        else:
            s3["object"]["versionId"] = version_id
            try:
                head = stack.s3.head_object(Bucket=stack.ingest, Key=key, VersionId=version_id)
                s3["object"]["eTag"] = head["ETag"].strip('"')
                s3["object"]["size"] = head["ContentLength"]
            except stack.s3.exceptions.ClientError:
                pass  # deleted on purpose by the test: keep the sample's eTag and size
        record["body"] = json.dumps(body)
    return event


@contextmanager
def keys_and_access_account(vault: str) -> Iterator[Any]:
    """moto with the audit, access and artifacts tables (as template.yaml defines them, named `audit`,
    `access`, `artifacts`) and a versioned vault bucket; yields an S3 client."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        for logical, name in (
            ("AuditTable", "audit"),
            ("AccessTable", "access"),
            ("ArtifactsTable", "artifacts"),
        ):
            create_template_table(dynamodb, logical, name)
        s3 = s3_client()
        s3.create_bucket(Bucket=vault)
        s3.put_bucket_versioning(Bucket=vault, VersioningConfiguration={"Status": "Enabled"})
        yield s3


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ModelShieldTest")
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
