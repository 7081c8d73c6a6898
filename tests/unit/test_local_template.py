"""The local stack provisions itself from template.yaml: same buckets, queues, tables, keys, wiring."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from modelshield.local.template import LocalProvisioner, load_template
from moto import mock_aws

from tests.builders import moto_credentials

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def provisioned(monkeypatch: pytest.MonkeyPatch):
    moto_credentials(monkeypatch)
    with mock_aws():
        clients = {n: boto3.client(n) for n in ("s3", "sqs", "dynamodb", "kms", "ssm", "events")}
        out = LocalProvisioner(
            load_template(ROOT / "template.yaml"), stack_name="unit", clients=clients
        ).provision()
        yield out, clients


def test_every_table_bucket_queue_and_key_in_the_template_is_created(provisioned) -> None:
    out, clients = provisioned
    template = load_template(ROOT / "template.yaml")["Resources"]
    by_type = {}
    for logical, resource in template.items():
        by_type.setdefault(resource["Type"], []).append(logical)
    tables = set(clients["dynamodb"].list_tables()["TableNames"])
    assert {out.names[t] for t in by_type["AWS::DynamoDB::Table"]} <= tables
    buckets = {b["Name"] for b in clients["s3"].list_buckets()["Buckets"]}
    assert {out.names[b] for b in by_type["AWS::S3::Bucket"]} <= buckets
    for key in by_type["AWS::KMS::Key"]:
        meta = clients["kms"].describe_key(KeyId=out.names[key])["KeyMetadata"]
        spec = template[key]["Properties"].get("KeySpec", "SYMMETRIC_DEFAULT")
        assert meta["KeySpec"] == spec
        if spec == "SYMMETRIC_DEFAULT":  # KMS rotates symmetric keys only (the HMAC seal key cannot)
            assert clients["kms"].get_key_rotation_status(KeyId=out.names[key])["KeyRotationEnabled"]


def test_the_scan_queue_has_the_dead_letter_redrive_and_long_visibility(provisioned) -> None:
    out, clients = provisioned
    attrs = clients["sqs"].get_queue_attributes(QueueUrl=out.names["ScanQueue"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == out.arns["ScanDeadLetterQueue"]
    scan_timeout = load_template(ROOT / "template.yaml")["Resources"]["ScanFunction"]["Properties"]["Timeout"]
    assert int(attrs["VisibilityTimeout"]) >= 6 * scan_timeout


def test_uploads_to_the_ingest_bucket_notify_the_scan_queue(provisioned) -> None:
    out, clients = provisioned
    config = clients["s3"].get_bucket_notification_configuration(Bucket=out.names["IngestBucket"])
    assert [q["QueueArn"] for q in config["QueueConfigurations"]] == [out.arns["ScanQueue"]]
    assert clients["s3"].get_bucket_versioning(Bucket=out.names["IngestBucket"])["Status"] == "Enabled"
    assert clients["s3"].get_bucket_versioning(Bucket=out.names["VaultBucket"])["Status"] == "Enabled"


def test_function_environments_resolve_to_the_created_resources(provisioned) -> None:
    out, _ = provisioned
    env = out.functions["ScanFunction"].environment
    assert env["SCANS_TABLE"] == out.names["ScansTable"]
    assert env["INGEST_BUCKET"] == out.names["IngestBucket"]
    assert env["KMS_KEY_ID"] == "alias/unit-vault"
    assert out.functions["ScanFunction"].sqs_sources == [("ScanQueue", 5)]
