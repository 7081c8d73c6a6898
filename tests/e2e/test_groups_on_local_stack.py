"""Security groups on the local stack: prefixes pick groups, groups pick verdicts, signatures are checked."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import model_signing.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from modelshield.cli import main as cli
from modelshield.cli.commands_stack import wait_for_scan
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack
from modelshield.models import RuleId, RuleStatus, Verdict
from modelshield.store.scans import ScanStore
from modelshield.wiring import dynamodb

pytestmark = pytest.mark.e2e


def safetensors_bytes(values: tuple[float, ...] = (1.0, 2.0)) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, 4 * len(values)]}})
    header += " " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header.encode() + struct.pack(f"<{len(values)}f", *values)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path / "state"))
    with LocalStack() as running:
        yield running
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def publisher(tmp_path: Path) -> tuple[Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "publisher.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def sign(private_key: Path, model: Path) -> bytes:
    signature = model.with_suffix(model.suffix + ".sig")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key).sign(model, signature)
    return signature.read_bytes()


def test_prefixes_select_groups_and_author_signatures_are_verified(
    stack: LocalStack, publisher: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private_key, public_pem = publisher
    ingest = stack.outputs["ingest_bucket"]
    s3 = stack.client("s3")

    # Given S3-Production trusting the publisher's key, applied with the CLI as a Security Engineer would
    indented_key = "\n".join("              " + line for line in public_pem.strip().splitlines())
    groups_file = tmp_path / "groups.yaml"
    groups_file.write_text(
        f"""groups:
  - name: S3-Production
    description: production models, signed by our publisher
    sources:
      - {{type: s3, bucket: "{ingest}", prefix: production/}}
    rules:
      MS-LICENSE:
        settings: {{approved_licenses: [apache-2.0, mit]}}
      MS-FORMAT-SAFE:
        settings: {{approved_formats: [safetensors, onnx, gguf], pickle_based: deny}}
      MS-AUTHOR-VERIFIED:
        settings:
          trusted_public_keys:
            - |
{indented_key}
"""
    )
    assert cli(["groups", "apply", str(groups_file)]) == 0, capsys.readouterr().err

    # And a signed model, a tampered copy of it (same signature, different bytes), and models for other groups
    signed = tmp_path / "model.safetensors"
    signed.write_bytes(safetensors_bytes())
    signature = sign(private_key, signed)
    uploads = {
        "production/fraud-detector/model.safetensors.sig": (signature, {}),
        "production/fraud-detector/model.safetensors": (signed.read_bytes(), {"license": "mit"}),
        "production/tampered/model.safetensors.sig": (signature, {}),
        "production/tampered/model.safetensors": (safetensors_bytes((6.0, 6.0)), {"license": "mit"}),
        "production/pickled/model.pt": (benign_checkpoint(), {"license": "mit"}),
        "partner/acme/model.pt": (benign_checkpoint(), {}),
        "models/team/evil.pkl": (malicious_pickle(), {}),
    }

    # When they are uploaded (signatures first, as a publisher would)
    versions = {}
    for key, (body, metadata) in uploads.items():
        versions[key] = s3.put_object(Bucket=ingest, Key=key, Body=body, Metadata=metadata)["VersionId"]
    scans = ScanStore(stack.env["SCANS_TABLE"], dynamodb())
    record = {
        k: wait_for_scan(scans, f"{ingest}/{k}", versions[k], 120) for k in uploads if not k.endswith(".sig")
    }

    def rule(key: str, rule_id: RuleId) -> RuleStatus:
        return next(r.status for r in record[key].rules if r.rule is rule_id)

    # Then each lands in the group that owns its prefix, with that group's verdict
    signed_record = record["production/fraud-detector/model.safetensors"]
    assert signed_record.group == "S3-Production"
    assert signed_record.verdict is Verdict.ALLOWED, signed_record.message
    assert rule("production/fraud-detector/model.safetensors", RuleId.AUTHOR_VERIFIED) is RuleStatus.PASS

    tampered = record["production/tampered/model.safetensors"]
    assert tampered.verdict is Verdict.BLOCKED
    assert rule("production/tampered/model.safetensors", RuleId.AUTHOR_VERIFIED) is RuleStatus.FAIL

    pickled = record["production/pickled/model.pt"]
    assert pickled.verdict is Verdict.BLOCKED
    assert rule("production/pickled/model.pt", RuleId.FORMAT_SAFE) is RuleStatus.FAIL

    partner = record["partner/acme/model.pt"]
    assert partner.group == "Partner-S3-Audit"
    assert partner.verdict is Verdict.ALLOWED_WITH_WARNINGS, partner.message

    evil = record["models/team/evil.pkl"]
    assert evil.group == "default" and evil.verdict is Verdict.BLOCKED
    assert rule("models/team/evil.pkl", RuleId.CODE_EXEC) is RuleStatus.FAIL

    # And `modelshield verdict` shows the product spec's view of a scan
    capsys.readouterr()
    assert cli(["verdict", "production/tampered/model.safetensors"]) == 1
    out = capsys.readouterr().out
    assert "using S3-Production group" in out and "MS-AUTHOR-VERIFIED" in out


def test_a_rescan_after_a_rule_change_releases_or_quarantines(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest, vault = stack.outputs["ingest_bucket"], stack.outputs["vault_bucket"]
    s3 = stack.client("s3")
    scans = ScanStore(stack.env["SCANS_TABLE"], dynamodb())

    # Given a pickled checkpoint that the partner group allows with warnings, released to the vault
    version = s3.put_object(Bucket=ingest, Key="partner/acme/model.pt", Body=benign_checkpoint())["VersionId"]
    first = wait_for_scan(scans, f"{ingest}/partner/acme/model.pt", version, 120)
    assert first.verdict is Verdict.ALLOWED_WITH_WARNINGS
    assert s3.get_object(Bucket=vault, Key="partner/acme/model.pt")["ContentLength"] > 0

    # When the group starts blocking pickle-based formats and its artifacts are rescanned
    groups_file = tmp_path / "groups.yaml"
    groups_file.write_text(
        f"""groups:
  - name: Partner-S3-Audit
    sources:
      - {{type: s3, bucket: "{ingest}", prefix: partner/}}
    rules:
      MS-FORMAT-SAFE: {{blocking: true, settings: {{pickle_based: deny}}}}
"""
    )
    assert cli(["groups", "apply", str(groups_file)]) == 0, capsys.readouterr().err
    assert cli(["rescan", "--group", "Partner-S3-Audit", "--wait"]) == 1

    # Then the model is blocked, quarantined, and no longer where consumers read
    latest = scans.latest(f"{ingest}/partner/acme/model.pt")
    assert latest is not None and latest.trigger == "rescan" and latest.verdict is Verdict.BLOCKED
    assert latest.encryption_state.value == "QUARANTINED"
    keys = {v["Key"] for v in s3.list_object_versions(Bucket=vault).get("Versions", [])}
    assert "quarantine/partner/acme/model.pt" in keys
    assert "partner/acme/model.pt" not in keys
