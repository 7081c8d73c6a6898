"""Scan records are sealed with a KMS HMAC key (moto): a record ModelShield wrote verifies after its trip
through DynamoDB; a record written or edited by anyone else does not."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from modelshield.local.template import create_template_table
from modelshield.models import Finding, Format, RuleId, ScanRecord, Severity, Verdict, utcnow
from modelshield.store.scans import ScanStore
from modelshield.store.seal import ScanSealer
from moto import mock_aws

from tests.builders import moto_credentials


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Any:
    moto_credentials(monkeypatch)
    with mock_aws():
        kms = boto3.client("kms")
        key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
        create_template_table(boto3.client("dynamodb"), "ScansTable", "scans")
        resource = boto3.resource("dynamodb")
        sealing = ScanStore("scans", resource, sealer=ScanSealer(kms, key))
        plain = ScanStore("scans", resource)  # what anyone with PutItem on the table can do
        yield sealing, plain, kms


def _record(**changes: Any) -> ScanRecord:
    now = utcnow()
    return ScanRecord(
        artifact_id="ingest/models/m.pkl",
        scan_ref=f"{now.isoformat()}#v1#s1",
        scan_id="s1",
        bucket="ingest",
        key="models/m.pkl",
        version_id="v1",
        sha256="ab" * 32,
        size=123,
        format=Format.PICKLE,
        verdict=Verdict.BLOCKED,
        group="default",
        group_version=3,
        rules=[],
        findings=[Finding(rule=RuleId.CODE_EXEC, severity=Severity.CRITICAL, message="os.system call")],
        scanner_version="test",
        scanned_at=now,
        timings_ms={"scan": 12.345678, "download": 0.1},
    ).model_copy(update=changes)


def test_a_record_modelshield_wrote_verifies_after_its_trip_through_dynamodb(stores: Any) -> None:
    sealing, _plain, _kms = stores
    # When a record with findings and float timings is appended and read back
    sealing.append(_record())
    stored = sealing.latest("ingest/models/m.pkl", "v1")
    # Then it carries a seal that verifies
    assert stored is not None and stored.mac
    assert sealing.seal_refusal(stored) is None


def test_an_edited_record_and_an_unsealed_one_are_refused(stores: Any) -> None:
    sealing, plain, _kms = stores
    sealing.append(_record())
    genuine = sealing.latest("ingest/models/m.pkl", "v1")
    assert genuine is not None
    # When the verdict is edited in place (UpdateItem), keeping the genuine seal
    sealing.table.update_item(
        Key={"artifact_id": genuine.artifact_id, "scan_ref": genuine.scan_ref},
        UpdateExpression="SET verdict = :v",
        ExpressionAttributeValues={":v": "ALLOWED"},
    )
    edited = sealing.latest("ingest/models/m.pkl", "v1")
    # Then the seal no longer matches
    assert edited is not None and edited.verdict is Verdict.ALLOWED
    assert "does not match its seal" in str(sealing.seal_refusal(edited))
    # And a record put without a seal, or with a seal that is not base64, is refused too
    plain.append(_record(scan_ref="9999#v1#forged", scan_id="forged", verdict=Verdict.ALLOWED))
    forged = sealing.latest("ingest/models/m.pkl", "v1")
    assert forged is not None and forged.scan_id == "forged"
    assert "carries no seal" in str(sealing.seal_refusal(forged))
    assert "does not match" in str(sealing.seal_refusal(forged.model_copy(update={"mac": "%%%"})))


def test_a_store_without_a_key_neither_seals_nor_judges(stores: Any) -> None:
    _sealing, plain, _kms = stores
    record = _record()
    assert plain.sealed(record).mac is None and plain.seal_refusal(record) is None
