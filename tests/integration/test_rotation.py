"""The rotation run under moto: re-wrap to a group's new key with server-side copies, re-key by data-key age,
resume after an interruption without repeating work, move live grants, and the RotateFunction handler."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from awscrt.checksums import crc64nvme
from modelshield import wiring
from modelshield.access import AccessService, decrypt_with_grant, vault_context_reader
from modelshield.audit import AuditLog, AuditQuery, Decision
from modelshield.cli import main as cli_main
from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import decrypt_s3_to
from modelshield.crypto.streams import Expectation
from modelshield.models import (
    ArtifactState,
    Verdict,
)
from modelshield.policy.groups import SecurityGroup
from modelshield.rotation import RotationSettings, Rotator
from modelshield.store.access import DynamoAccessStore
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore, DynamoCheckpointStore
from modelshield.store.scans import ScanStore
from modelshield.wiring import dynamodb

from tests.builders import encrypted_allowed_artifact, keys_and_access_account, moto_credentials

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
VAULT = "vault-bucket"
GROUP = "S3-Production"
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-1"
ALICE = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"


class Traffic:
    """Bytes moved through one S3 client, counted from botocore's events (not from the code under test)."""

    def __init__(self, s3: Any) -> None:
        self.downloaded = self.uploaded = 0
        self.copied_parts = 0
        s3.meta.events.register("after-call.s3.GetObject", self._got)
        s3.meta.events.register("provide-client-params.s3.PutObject", self._put)
        s3.meta.events.register("provide-client-params.s3.UploadPart", self._put)
        s3.meta.events.register("before-call.s3.UploadPartCopy", self._copy)

    def _got(self, parsed: dict[str, Any], **_: Any) -> None:
        self.downloaded += int(parsed.get("ContentLength", 0))

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        body = params.get("Body", b"")
        if isinstance(body, bytes | bytearray | memoryview):
            self.uploaded += memoryview(body).nbytes
        else:  # a file object: its remaining length
            here = body.tell()
            self.uploaded += body.seek(0, os.SEEK_END) - here
            body.seek(here)

    def _copy(self, **_: Any) -> None:
        self.copied_parts += 1


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    moto_credentials(monkeypatch, POWERTOOLS_TRACE_DISABLED="true")
    with keys_and_access_account(VAULT) as s3:
        kms = boto3.client("kms")
        old_key = kms.create_key(Description="old group key")["KeyMetadata"]["Arn"]
        new_key = kms.create_key(Description="new group key")["KeyMetadata"]["Arn"]
        kms.enable_key_rotation(KeyId=new_key)
        kms.create_alias(AliasName="alias/modelshield-production-v2", TargetKeyId=new_key)
        default_key = kms.create_key(Description="stack default key, rotation off")["KeyMetadata"]["Arn"]
        groups = [
            SecurityGroup(
                name=GROUP, kms_key_id="alias/modelshield-production-v2", max_data_key_age_days=365
            ),
            SecurityGroup(name="default"),
        ]
        yield SimpleNamespace(
            s3=s3,
            kms=kms,
            old_key=old_key,
            new_key=new_key,
            default_key=default_key,
            groups=groups,
            artifacts=ArtifactStore("artifacts", dynamodb()),
            audit=AuditLog(DynamoAuditStore("audit", dynamodb()), clock=lambda: NOW),
            checkpoints=DynamoCheckpointStore("audit", dynamodb()),
            tmp=tmp_path,
            env=monkeypatch,
        )


def add_artifact(
    stack: Any, name: str, data: bytes, key_arn: str, *, age_days: int = 10, **extra: Any
) -> ArtifactState:
    return encrypted_allowed_artifact(
        s3=stack.s3,
        kms=stack.kms,
        artifacts=stack.artifacts,
        key_arn=key_arn,
        name=name,
        data=data,
        vault=VAULT,
        now=NOW,
        data_key_created_at=NOW - timedelta(days=age_days),
        group=GROUP,
        frame_length=64 * 1024,
        metadata={"modelshield-verdict": "ALLOWED", "modelshield-wrapping-key": key_arn},
        **extra,
    )


def rotator(stack: Any, *, access: AccessService | None = None, **settings: Any) -> Rotator:
    return Rotator(
        s3=stack.s3,
        kms=stack.kms,
        artifacts=stack.artifacts,
        groups=lambda: stack.groups,
        audit=stack.audit,
        settings=RotationSettings(
            default_key_id=stack.default_key,
            first_part_bytes=5 * MiB,
            copy_part_bytes=5 * MiB,
            margin_ms=1_000,
            workdir=str(stack.tmp),
            **settings,
        ),
        access=access,
        checkpoints=stack.checkpoints,
        clock=lambda: NOW,
    )


def decrypted_sha(stack: Any, artifact: ArtifactState, key_arn: str) -> str:
    out = stack.tmp / "check.bin"
    sha = decrypt_s3_to(
        VAULT,
        str(artifact.vault_key),
        artifact.vault_version_id,
        out,
        s3=wiring.s3_client(),
        expect=Expectation(KmsKeyring(stack.kms, allowed_key_arns=[key_arn]), None),
    )
    out.unlink()
    return sha


def header_of(stack: Any, artifact: ArtifactState) -> Any:
    import io

    body = stack.s3.get_object(Bucket=VAULT, Key=artifact.vault_key, VersionId=artifact.vault_version_id)[
        "Body"
    ]
    return parse_header(io.BytesIO(body.read(256 * 1024)))[0]


def stored_checksum(stack: Any, artifact: ArtifactState) -> str | None:
    """The full-object CRC64NVME S3 reports for the artifact's vault version."""
    head = stack.s3.head_object(
        Bucket=VAULT, Key=artifact.vault_key, VersionId=artifact.vault_version_id, ChecksumMode="ENABLED"
    )
    return head.get("ChecksumCRC64NVME") if head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT" else None


def crc64nvme_of(stack: Any, artifact: ArtifactState) -> str:
    """The CRC64NVME of the vault version's bytes, computed here by the CRT."""
    body = stack.s3.get_object(Bucket=VAULT, Key=artifact.vault_key, VersionId=artifact.vault_version_id)[
        "Body"
    ]
    return base64.b64encode(crc64nvme(body.read()).to_bytes(8, "big")).decode()


def versions(stack: Any, key: str) -> list[str]:
    listing = stack.s3.list_object_versions(Bucket=VAULT, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def test_one_run_rewraps_to_the_new_key_with_server_side_copies_and_rekeys_old_data_keys(stack: Any) -> None:
    # Given a group moved to a new key: a 24 MiB artifact and two small ones still wrapped by the old key,
    # and one artifact on the new key whose data key is older than the group's maximum age
    big_data = os.urandom(24 * MiB)
    big = add_artifact(stack, "models/big.safetensors", big_data, stack.old_key)
    small = [
        add_artifact(stack, f"models/small-{i}.pt", os.urandom(30_000 + i), stack.old_key) for i in range(2)
    ]
    stale = add_artifact(stack, "models/stale.onnx", os.urandom(200_000), stack.new_key, age_days=400)
    fresh = add_artifact(stack, "models/fresh.gguf", os.urandom(10_000), stack.new_key)
    old_big_header = header_of(stack, big)
    old_stale_header = header_of(stack, stale)
    traffic = Traffic(stack.s3)

    # When one rotation run executes
    report = rotator(stack).run()
    run_traffic = (traffic.downloaded, traffic.uploaded, traffic.copied_parts)

    # Then every artifact is wrapped by the group's current key and still decrypts to the same sha256
    assert report.complete and not report.failures
    for before in [big, *small, stale, fresh]:
        after = stack.artifacts.get(before.artifact_id, "v1")
        assert after is not None
        assert after.wrapping_key_arn == stack.new_key
        assert decrypted_sha(stack, after, stack.new_key) == before.sha256
        assert versions(stack, str(before.vault_key)) == [after.vault_version_id]  # the old version is gone
        # (and the object's own metadata names the key that wraps it now, kept with everything else)
        meta = stack.s3.head_object(Bucket=VAULT, Key=str(after.vault_key))["Metadata"]
        assert meta == {"modelshield-verdict": "ALLOWED", "modelshield-wrapping-key": stack.new_key}
        # (and S3 holds the full-object CRC64NVME of exactly the new bytes, checked on write)
        assert stored_checksum(stack, after) == crc64nvme_of(stack, after)
    counts = report.counts()
    assert (counts["rewrap"], counts["rekey"], counts["examined"]) == (3, 1, 5)

    # And the big artifact was re-wrapped, not re-encrypted: same message id, frames copied server-side
    big_after = stack.artifacts.get(big.artifact_id, "v1")
    assert big_after is not None
    new_header = header_of(stack, big_after)
    assert new_header.message_id == old_big_header.message_id
    assert [e.key_arn for e in new_header.encrypted_data_keys] == [stack.new_key]
    assert big_after.data_key_created_at == big.data_key_created_at
    item = next(a for a in report.actions if a.artifact_id == big.artifact_id)
    assert item.bytes_copied > 18 * MiB
    assert item.bytes_downloaded < 0.25 * len(big_data) and item.bytes_uploaded < 0.25 * len(big_data)
    # (the whole run's S3 traffic, counted independently, is also a small fraction of the big artifact)
    downloaded, uploaded, copied_parts = run_traffic
    assert copied_parts >= 3
    assert 5 * MiB <= uploaded < 0.3 * len(big_data)  # part 1 (header + first 5 MiB) and the small ones
    assert downloaded < 0.3 * len(big_data)

    # And the stale artifact got a fresh data key (a new message) and a new data-key date
    stale_after = stack.artifacts.get(stale.artifact_id, "v1")
    assert stale_after is not None and stale_after.data_key_created_at == NOW
    assert header_of(stack, stale_after).message_id != old_stale_header.message_id

    # And the stack's default key, whose rotation is off, is reported; every action is audited
    assert report.keys_without_rotation == [stack.default_key]
    audit = stack.audit
    assert len(audit.list(AuditQuery(action="rotation.rewrap"))) == 3
    assert len(audit.list(AuditQuery(action="rotation.rekey"))) == 1
    assert audit.list(AuditQuery(action="key.rotation-disabled"))[0].detail["key_arn"] == stack.default_key
    assert audit.list(AuditQuery(action="rotation.run"))[0].detail["rewrap"] == 3
    assert audit.verify().ok

    # When the run repeats, there is nothing left to do
    again = rotator(stack).run()
    assert again.complete and again.actions == [] and again.examined == 5


def test_a_vault_object_from_before_full_object_checksums_is_rewrapped_with_one(stack: Any) -> None:
    # Given a 12 MiB artifact whose vault version carries only a SHA-256 (written before ModelShield
    # stored full-object CRC64NVME checksums), so the copied bytes' CRC cannot be derived from S3's
    artifact = add_artifact(stack, "models/legacy.safetensors", os.urandom(12 * MiB), stack.old_key)
    ciphertext = stack.s3.get_object(
        Bucket=VAULT, Key=artifact.vault_key, VersionId=artifact.vault_version_id
    )["Body"].read()
    legacy = stack.s3.put_object(
        Bucket=VAULT, Key=artifact.vault_key, Body=ciphertext, ChecksumAlgorithm="SHA256"
    )
    stack.s3.delete_object(Bucket=VAULT, Key=artifact.vault_key, VersionId=artifact.vault_version_id)
    artifact = stack.artifacts.save(
        artifact.model_copy(update={"vault_version_id": legacy["VersionId"]}),
        expected_revision=artifact.revision,
    )
    head = stack.s3.head_object(Bucket=VAULT, Key=artifact.vault_key, ChecksumMode="ENABLED")
    assert "ChecksumCRC64NVME" not in head
    completed: list[dict[str, Any]] = []
    stack.s3.meta.events.register(
        "provide-client-params.s3.CompleteMultipartUpload", lambda params, **_: completed.append(dict(params))
    )

    # When rotation re-wraps it to the group's new key
    report = rotator(stack).run()

    # Then the frames were still copied server-side, read once to compute their CRC, and the
    # multipart completion asked S3 to check the CRC64NVME of the whole new object, which S3 reports
    assert report.complete and not report.failures
    (item,) = report.actions
    assert item.bytes_copied > 6 * MiB and item.bytes_downloaded >= 6 * MiB
    after = stack.artifacts.get(artifact.artifact_id, "v1")
    assert after is not None and after.wrapping_key_arn == stack.new_key
    (request,) = completed
    assert request["ChecksumType"] == "FULL_OBJECT"
    assert request["ChecksumCRC64NVME"] == stored_checksum(stack, after) == crc64nvme_of(stack, after)
    assert decrypted_sha(stack, after, stack.new_key) == artifact.sha256


def test_a_quarantine_copy_is_rewrapped_and_its_old_version_kept(stack: Any) -> None:
    # Given a quarantined artifact still wrapped by the old key (the bucket policy forbids deleting any
    # quarantine/ version: they are the evidence of what was blocked)
    blocked = add_artifact(
        stack, "models/bad.pt", os.urandom(40_000), stack.old_key, vault_key="quarantine/models/bad.pt"
    )
    assert str(blocked.vault_key).startswith("quarantine/")
    before = versions(stack, str(blocked.vault_key))

    # When rotation runs
    report = rotator(stack).run()

    # Then the copy is re-wrapped under the new key, and the old version is kept, not deleted
    assert report.complete and not report.failures
    after = stack.artifacts.get(blocked.artifact_id, "v1")
    assert after is not None and after.wrapping_key_arn == stack.new_key
    assert decrypted_sha(stack, after, stack.new_key) == blocked.sha256
    listed = versions(stack, str(blocked.vault_key))
    assert set(before) < set(listed) and after.vault_version_id in listed
    item = next(a for a in report.actions if a.artifact_id == blocked.artifact_id)
    assert "kept" in item.note


def test_an_interrupted_run_resumes_without_doing_anything_twice(stack: Any) -> None:
    # Given six artifacts on the old key
    arts = [add_artifact(stack, f"models/m{i}.pt", os.urandom(5_000 + i), stack.old_key) for i in range(6)]
    calls = {"n": 0}

    def remaining_ms() -> int:
        # Plenty of time for the start and three items, then the Lambda is about to time out.
        calls["n"] += 1
        return 600_000 if calls["n"] <= 4 else 500

    # When the first run runs out of time after three items
    first = rotator(stack).run(remaining_ms=remaining_ms)
    # Then it stopped cleanly with a checkpoint, having done exactly three
    assert not first.complete and first.counts()["rewrap"] == 3
    assert stack.audit.list(AuditQuery(action="rotation.run"))[0].reason.startswith("stopped")

    # When the next scheduled run starts
    second = rotator(stack).run(remaining_ms=lambda: 600_000)
    # Then it resumes after the checkpoint and handles only the other three
    assert second.resumed and second.complete and second.run_id == first.run_id
    assert second.examined == 3 and second.counts()["rewrap"] == 3
    done_first = {a.artifact_id for a in first.actions}
    done_second = {a.artifact_id for a in second.actions}
    assert done_first.isdisjoint(done_second) and done_first | done_second == {a.artifact_id for a in arts}
    # And each artifact was re-wrapped exactly once: one audit record, one new version, old one deleted
    for art in arts:
        records = stack.audit.list(AuditQuery(artifact_id=art.artifact_id, action="rotation.rewrap"))
        assert len(records) == 1 and records[0].decision == Decision.ALLOWED
        assert len(versions(stack, str(art.vault_key))) == 1
    # And a later run starts over from the beginning and finds nothing to do
    third = rotator(stack).run(remaining_ms=lambda: 600_000)
    assert not third.resumed and third.examined == 6 and third.actions == []


def test_dry_run_reports_and_changes_nothing(stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given one artifact on the old key and one with an old data key
    a = add_artifact(stack, "models/a.pt", os.urandom(5_000), stack.old_key)
    b = add_artifact(stack, "models/b.pt", os.urandom(5_000), stack.new_key, age_days=500)
    # When a dry run executes
    report = rotator(stack).run(dry_run=True)
    # Then it lists both actions and changes no object, record, checkpoint or audit record
    assert sorted((x.artifact_id, x.action.value, x.done) for x in report.actions) == [
        (a.artifact_id, "rewrap", False),
        (b.artifact_id, "rekey", False),
    ]
    assert stack.artifacts.get(a.artifact_id, "v1") == a and stack.artifacts.get(b.artifact_id, "v1") == b
    assert len(versions(stack, str(a.vault_key))) == 1
    assert stack.checkpoints.get("rotation") is None
    assert stack.audit.store.head() is None


def test_live_grants_move_to_the_new_key_and_keep_working(stack: Any) -> None:
    # Given an approved grant on the old key
    art = add_artifact(stack, "models/served.pt", os.urandom(40_000), stack.old_key)
    access = AccessService(
        store=DynamoAccessStore("access", dynamodb()),
        artifacts=stack.artifacts,
        kms=stack.kms,
        audit=stack.audit,
        security_engineer_role="arn:aws:iam::*:role/ModelShieldSecurityEngineer",
        scans=ScanStore("scans", dynamodb()),
        context_reader=vault_context_reader(stack.s3),
        clock=lambda: NOW,
    )
    request = access.request(art.artifact_id, requester=CONSUMER, reason="serving", hours=48)
    approved = access.approve(request.request_id, approver=ALICE)
    # When the rotation run re-wraps the artifact
    report = rotator(stack, access=access).run()
    assert report.counts()["rewrap"] == 1
    # Then the grant was re-created on the new key with the same constraint, and the old one revoked
    moved = access.get(request.request_id)
    assert moved.key_arn == stack.new_key and moved.grant_id != approved.grant_id
    assert stack.kms.list_grants(KeyId=stack.old_key)["Grants"] == []
    new_grants = stack.kms.list_grants(KeyId=stack.new_key)["Grants"]
    assert [g["Constraints"] for g in new_grants] == [
        {"EncryptionContextEquals": approved.encryption_context}
    ]
    # And the consumer still decrypts
    out = stack.tmp / "served.bin"
    assert decrypt_with_grant(access, request.request_id, out, principal=CONSUMER, s3=stack.s3) == art.sha256


def test_a_concurrent_record_change_is_merged_not_lost(stack: Any) -> None:
    # Given an artifact on the old key, whose record a rescan changes while the rotation is running
    art = add_artifact(stack, "models/rescanned.pt", os.urandom(8_000), stack.old_key)
    store = stack.artifacts
    real_save = store.save
    state = {"raced": False}

    def racing_save(new: ArtifactState, *, expected_revision: int | None) -> ArtifactState:
        if not state["raced"]:
            state["raced"] = True
            current = store.get(art.artifact_id, "v1")
            real_save(
                current.model_copy(update={"verdict": Verdict.ALLOWED_WITH_WARNINGS}),
                expected_revision=current.revision,
            )
        return real_save(new, expected_revision=expected_revision)

    store.save = racing_save  # type: ignore[method-assign]
    # When the rotation commits its new vault version
    report = rotator(stack).run()
    # Then both changes survive: the rescan's verdict and the rotation's new key and version
    after = store.get(art.artifact_id, "v1")
    assert report.counts()["rewrap"] == 1 and not report.failures
    assert after.verdict == Verdict.ALLOWED_WITH_WARNINGS and after.wrapping_key_arn == stack.new_key
    # (three writes: the rescan, rotation's move to the new version, and clearing the superseded copy
    # once deleted)
    assert after.revision == art.revision + 3 and after.superseded_vault_copy == {}


def test_cli_keys_status_and_rotate(stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the stack's environment and one artifact still on the old key
    for name, value in {
        "ARTIFACTS_TABLE": "artifacts",
        "AUDIT_TABLE": "audit",
        "KMS_KEY_ID": stack.default_key,
    }.items():
        stack.env.setenv(name, value)
    stack.env.setattr("modelshield.wiring.group_source", lambda _source: lambda: stack.groups)
    art = add_artifact(stack, "models/cli.pt", os.urandom(5_000), stack.old_key)
    # When `keys status` runs
    assert cli_main(["keys", "status", "--format", "json"]) == 1  # the default key's rotation is off
    keys = {k["key_arn"]: k for k in json.loads(capsys.readouterr().out)["keys"]}
    # Then it shows each key's groups, rotation, artifacts and oldest data key
    assert keys[stack.new_key]["groups"] == [GROUP] and keys[stack.new_key]["rotation_enabled"] is True
    assert keys[stack.new_key]["last_rotation_source"] == "creation_date"
    assert keys[stack.default_key]["rotation_enabled"] is False and not keys[stack.default_key]["compliant"]
    assert keys[stack.old_key]["groups"] == [] and keys[stack.old_key]["artifacts"] == 1
    # When `keys rotate --dry-run` and then `keys rotate` run
    assert cli_main(["keys", "rotate", "--dry-run"]) == 0
    assert "would re-wrap 1" in capsys.readouterr().out
    assert stack.artifacts.get(art.artifact_id, "v1").wrapping_key_arn == stack.old_key
    assert cli_main(["keys", "rotate", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["rewrap"] == 1
    assert stack.artifacts.get(art.artifact_id, "v1").wrapping_key_arn == stack.new_key


def test_rotate_function_handles_the_schedule_event(stack: Any) -> None:
    # Given the RotateFunction's environment and one artifact on the old key
    for name, value in {
        "ARTIFACTS_TABLE": "artifacts",
        "AUDIT_TABLE": "audit",
        "ACCESS_TABLE": "access",
        "KMS_KEY_ID": stack.default_key,
        "POWERTOOLS_METRICS_NAMESPACE": "ModelShieldTest",
    }.items():
        stack.env.setenv(name, value)
    stack.env.setattr("modelshield.wiring.group_source", lambda _source: lambda: stack.groups)
    art = add_artifact(stack, "models/lambda.pt", os.urandom(5_000), stack.old_key)
    spec = importlib.util.spec_from_file_location("rotate_function_app", ROOT / "functions/rotate/app.py")
    app = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(app)  # type: ignore[union-attr]
    context = SimpleNamespace(
        function_name="RotateFunction",
        memory_limit_in_mb=1024,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:RotateFunction",
        aws_request_id="r-1",
        get_remaining_time_in_millis=lambda: 800_000,
    )
    # When the dry-run event and then the schedule event arrive
    dry = app.lambda_handler(json.loads((ROOT / "events/schedule_rotate_dry_run.json").read_text()), context)
    assert dry["dry_run"] and dry["counts"]["rewrap"] == 1
    assert stack.artifacts.get(art.artifact_id, "v1").wrapping_key_arn == stack.old_key
    result = app.lambda_handler(json.loads((ROOT / "events/schedule_rotate.json").read_text()), context)
    # Then the run completes and the artifact is on the new key
    assert result["complete"] and result["counts"]["rewrap"] == 1 and result["failures"] == []
    assert stack.default_key in result["keys_without_rotation"]
    assert stack.artifacts.get(art.artifact_id, "v1").wrapping_key_arn == stack.new_key


def test_a_concurrent_change_of_the_vault_object_discards_our_copy(stack: Any) -> None:
    # Given an artifact whose vault object is replaced (e.g. re-encrypted by a bulk job) during rotation
    art = add_artifact(stack, "models/replaced.pt", os.urandom(8_000), stack.old_key)
    store = stack.artifacts
    real_save = store.save

    def racing_save(new: ArtifactState, *, expected_revision: int | None) -> ArtifactState:
        store.save = real_save  # type: ignore[method-assign]
        current = store.get(art.artifact_id, "v1")
        real_save(
            current.model_copy(update={"vault_version_id": "someone-elses"}),
            expected_revision=current.revision,
        )
        return real_save(new, expected_revision=expected_revision)

    store.save = racing_save  # type: ignore[method-assign]
    # When the rotation tries to commit
    report = rotator(stack).run()
    # Then nothing of ours is kept: a failure is reported and audited, our new version is deleted,
    # the original vault version is untouched, and the other writer's record stands
    assert report.counts()["rewrap"] == 0 and len(report.failures) == 1
    assert "changed during rotation" in report.failures[0]["error"]
    assert versions(stack, str(art.vault_key)) == [art.vault_version_id]
    assert store.get(art.artifact_id, "v1").vault_version_id == "someone-elses"
    errors = stack.audit.list(AuditQuery(action="rotation.rewrap", decision=Decision.ERROR))
    assert len(errors) == 1 and errors[0].artifact_id == art.artifact_id


def test_an_item_too_large_for_any_single_run_is_deferred_not_looped_on(stack: Any) -> None:
    # Given an artifact due for re-keying whose estimated time exceeds a whole invocation
    art = add_artifact(stack, "models/huge.pt", os.urandom(50_000), stack.new_key, age_days=900)
    # When a run with 100 s available estimates it at far more
    report = rotator(stack, rekey_bytes_per_second=10.0).run(remaining_ms=lambda: 100_000)
    # Then it is reported as deferred, the run still completes, and nothing was changed
    assert report.complete and report.actions == []
    assert [d["artifact_id"] for d in report.deferred] == [art.artifact_id]
    assert stack.artifacts.get(art.artifact_id, "v1") == art
