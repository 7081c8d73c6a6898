"""ScanFunction end to end under moto: S3 upload → SQS event → handler → vault, scans, artifacts, tags."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import aws_encryption_sdk
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from awscrt.checksums import crc64nvme
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.models import CTX_ARTIFACT, CTX_SHA256, CTX_VERSION, RuleId, ScanRecord, Verdict
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.scans import ScanStore

from tests.builders import MotoStack, s3_event


def crc64nvme_b64(data: bytes) -> str:
    """S3's full-object CRC64NVME of `data`, computed by the CRT here."""
    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


def scans(stack: MotoStack) -> ScanStore:
    return ScanStore(stack.env["SCANS_TABLE"], stack.dynamodb)


def artifacts(stack: MotoStack) -> ArtifactStore:
    return ArtifactStore(stack.env["ARTIFACTS_TABLE"], stack.dynamodb)


def all_scan_records(stack: MotoStack) -> list[dict]:
    return stack.table("SCANS_TABLE").scan()["Items"]


def vault_versions(stack: MotoStack) -> list[dict]:
    return stack.s3.list_object_versions(Bucket=stack.vault).get("Versions", [])


def tags(stack: MotoStack, key: str, version: str) -> dict[str, str]:
    tagset = stack.s3.get_object_tagging(Bucket=stack.ingest, Key=key, VersionId=version)["TagSet"]
    return {t["Key"]: t["Value"] for t in tagset}


def official_decrypt(stack: MotoStack, ciphertext: bytes, key_arn: str) -> tuple[bytes, dict[str, str]]:
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    plaintext, header = client.decrypt(
        source=ciphertext, key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    )
    return plaintext, dict(header.encryption_context)


def test_benign_checkpoint_is_allowed_encrypted_and_decrypts_with_the_official_sdk(
    moto_stack: MotoStack,
) -> None:
    # Given a benign PyTorch checkpoint uploaded to the ingest bucket
    body = benign_checkpoint("classifier")
    version = moto_stack.put("models/classifier.pt", body)

    # When S3's notification reaches the ScanFunction
    response = moto_stack.deliver_queued()

    # Then the batch succeeded and the verdict is recorded as ALLOWED and ENCRYPTED
    assert response["batchItemFailures"] == []
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/classifier.pt")
    assert record is not None
    assert record.verdict is Verdict.ALLOWED
    assert record.version_id == version
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert record.format.value == "pytorch-zip"
    assert record.encryption_state.value == "ENCRYPTED"
    assert {r.rule for r in record.rules} >= {RuleId.CODE_EXEC, RuleId.SCAN_INCOMPLETE}

    # And the vault copy is an AWS Encryption SDK message that the official library decrypts to the upload
    state = artifacts(moto_stack).get(record.artifact_id, version)
    assert state is not None and state.vault_key == "models/classifier.pt"
    ciphertext = moto_stack.s3.get_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id
    )["Body"].read()
    assert body not in ciphertext
    plaintext, context = official_decrypt(moto_stack, ciphertext, state.wrapping_key_arn)
    assert plaintext == body
    assert context[CTX_ARTIFACT] == record.artifact_id
    assert context[CTX_VERSION] == version
    assert context[CTX_SHA256] == record.sha256

    # And the vault object says what it is, consistently with the artifacts table and the scan record
    head = moto_stack.s3.head_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id, ChecksumMode="ENABLED"
    )
    assert head["ChecksumCRC64NVME"] == crc64nvme_b64(ciphertext)  # the full-object checksum S3 checked
    assert head["Metadata"] == {
        "modelshield-state": state.encryption_state.value,
        "modelshield-format": state.format.value,
        "modelshield-plaintext-sha256": state.sha256,
        "modelshield-wrapping-key": state.wrapping_key_arn,
        "modelshield-scan-id": record.scan_id,
        "modelshield-verdict": record.verdict.value,
        "modelshield-envelope": "aws-encryption-sdk-v2",
    }
    # And, the vault copy being verified and recorded, no plaintext version of the upload remains
    remaining = moto_stack.s3.list_object_versions(Bucket=moto_stack.ingest, Prefix="models/classifier.pt")
    assert remaining.get("Versions", []) == []


def test_malicious_pickle_is_blocked_and_stored_only_in_quarantine(moto_stack: MotoStack) -> None:
    # Given a pickle that would call os.system when loaded
    version = moto_stack.put("models/innocent.pkl", malicious_pickle())

    # When it is scanned
    assert moto_stack.deliver_queued()["batchItemFailures"] == []

    # Then it is BLOCKED by the code-execution rule, with the offending global in the finding
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/innocent.pkl")
    assert record is not None and record.verdict is Verdict.BLOCKED
    assert record.encryption_state.value == "QUARANTINED"
    code_exec = [f for f in record.findings if f.rule is RuleId.CODE_EXEC]
    assert code_exec and "os" in json.dumps(code_exec[0].detail) + code_exec[0].message

    # And nothing of it exists in the vault outside quarantine/
    keys = [v["Key"] for v in vault_versions(moto_stack)]
    assert keys == ["quarantine/models/innocent.pkl"]
    # And its quarantine copy is encrypted for the quarantine purpose, which no grant may name
    state = artifacts(moto_stack).get(record.artifact_id, version)
    assert state is not None
    head = moto_stack.s3.head_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id, ChecksumMode="ENABLED"
    )
    assert head["Metadata"]["modelshield-state"] == "QUARANTINED"
    quarantined = moto_stack.s3.get_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id
    )["Body"].read()
    assert head["ChecksumCRC64NVME"] == crc64nvme_b64(quarantined)
    header_bytes = moto_stack.s3.get_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id, Range="bytes=0-4095"
    )["Body"].read()
    assert b"modelshield:purpose" in header_bytes and b"quarantine" in header_bytes
    # And the plaintext upload is gone too: the quarantine copy is the record of it
    assert (
        moto_stack.s3.list_object_versions(Bucket=moto_stack.ingest, Prefix="models/innocent.pkl").get(
            "Versions", []
        )
        == []
    )


def test_a_duplicate_event_does_nothing(moto_stack: MotoStack) -> None:
    # Given an artifact that has been processed once
    version = moto_stack.put("models/classifier.pt", benign_checkpoint())
    event = s3_event(moto_stack, "models/classifier.pt", version)
    assert moto_stack.invoke(event)["batchItemFailures"] == []

    # When the same event is delivered again
    assert moto_stack.invoke(event)["batchItemFailures"] == []

    # Then there is still exactly one scan record and one vault object version
    assert len(all_scan_records(moto_stack)) == 1
    assert len(vault_versions(moto_stack)) == 1


def test_a_redelivery_after_the_idempotency_window_is_still_a_no_op(moto_stack: MotoStack) -> None:
    # Given an artifact processed once, and the idempotency records gone (expired)
    version = moto_stack.put("models/classifier.pt", benign_checkpoint())
    event = s3_event(moto_stack, "models/classifier.pt", version)
    moto_stack.invoke(event)
    table = moto_stack.table("IDEMPOTENCY_TABLE")
    for item in table.scan()["Items"]:
        table.delete_item(Key={"id": item["id"]})

    # When the event arrives again
    assert moto_stack.invoke(event)["batchItemFailures"] == []

    # Then the artifact record recognises the version and nothing is redone
    assert len(all_scan_records(moto_stack)) == 1
    assert len(vault_versions(moto_stack)) == 1


def test_an_event_for_a_deleted_object_is_recorded_as_a_clear_error_not_retried(
    moto_stack: MotoStack,
) -> None:
    # Given an object version deleted before its event is processed
    version = moto_stack.put("models/gone.pt", benign_checkpoint())
    moto_stack.s3.delete_object(Bucket=moto_stack.ingest, Key="models/gone.pt", VersionId=version)

    # When its event arrives
    response = moto_stack.invoke(s3_event(moto_stack, "models/gone.pt", version))

    # Then the message is consumed (no retry storm) and an ERROR verdict explains what happened
    assert response["batchItemFailures"] == []
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/gone.pt")
    assert record is not None and record.verdict is Verdict.ERROR
    assert "no longer exists" in record.message and "upload it again" in record.message
    assert vault_versions(moto_stack) == []


@pytest.mark.parametrize(
    ("key", "body", "expected"),
    [
        ("models/truncated.pkl", malicious_pickle()[:-9], {Verdict.BLOCKED, Verdict.ERROR}),
        ("models/empty.pt", b"", {Verdict.BLOCKED, Verdict.ERROR}),
        ("models/équipe 1/modèle v2+final.pt", benign_checkpoint(), {Verdict.ALLOWED}),
    ],
    ids=["truncated", "zero-bytes", "plus-spaces-unicode-key"],
)
def test_bad_input_gets_a_recorded_verdict_and_never_crashes_the_batch(
    moto_stack: MotoStack, key: str, body: bytes, expected: set[Verdict]
) -> None:
    # Given an awkward artifact (uploaded under its real, decoded key)
    version = moto_stack.put(key, body)

    # When its event (key URL-encoded as S3 sends it) is processed
    response = moto_stack.invoke(s3_event(moto_stack, key, version, "s3_put_unicode_key_via_sqs.json"))

    # Then the batch succeeds and a verdict with a message is recorded under the decoded key
    assert response["batchItemFailures"] == []
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/{key}")
    assert record is not None, f"no record for {key!r}"
    assert record.verdict in expected
    assert record.message
    if record.verdict is not Verdict.ALLOWED:
        assert record.findings, "a non-allowed verdict must say why"


def test_a_multipart_upload_event_is_scanned(moto_stack: MotoStack) -> None:
    # Given an artifact uploaded with multipart upload
    body = benign_checkpoint()
    upload = moto_stack.s3.create_multipart_upload(Bucket=moto_stack.ingest, Key="models/big.pt")
    part = moto_stack.s3.upload_part(
        Bucket=moto_stack.ingest, Key="models/big.pt", UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    version = moto_stack.s3.complete_multipart_upload(
        Bucket=moto_stack.ingest,
        Key="models/big.pt",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )["VersionId"]

    # When the CompleteMultipartUpload event is processed
    response = moto_stack.invoke(s3_event(moto_stack, "models/big.pt", version, "s3_multipart_via_sqs.json"))

    # Then it is scanned like any other upload
    assert response["batchItemFailures"] == []
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/big.pt")
    assert record is not None and record.verdict is Verdict.ALLOWED


def test_the_s3_test_event_is_ignored(moto_stack: MotoStack) -> None:
    # Given the test event S3 sends when notifications are configured
    event = json.loads((moto_stack_events() / "s3_test_event_via_sqs.json").read_text())

    # When it is delivered, Then nothing fails and nothing is recorded
    assert moto_stack.invoke(event)["batchItemFailures"] == []
    assert all_scan_records(moto_stack) == []


def moto_stack_events():
    from tests.builders import EVENTS

    return EVENTS


def test_a_malformed_message_fails_only_its_own_record(moto_stack: MotoStack) -> None:
    # Given a batch with one valid event and one garbage message
    version = moto_stack.put("models/classifier.pt", benign_checkpoint())
    event = s3_event(moto_stack, "models/classifier.pt", version)
    garbage = dict(event["Records"][0], messageId="garbage-1", body="this is not an S3 event")
    event["Records"].append(garbage)

    # When the batch is processed
    response = moto_stack.invoke(event)

    # Then only the garbage message is reported failed (SQS retries it, then the DLQ keeps it)
    assert response["batchItemFailures"] == [{"itemIdentifier": "garbage-1"}]
    assert scans(moto_stack).latest(f"{moto_stack.ingest}/models/classifier.pt") is not None


def test_an_event_without_version_id_scans_the_version_it_is_about(moto_stack: MotoStack) -> None:
    # Given two versions of one key, and an event (as moto sends it) with no versionId but v1's eTag
    v1 = moto_stack.put("models/m.pt", benign_checkpoint())
    moto_stack.put("models/m.pt", malicious_pickle())
    etag = moto_stack.s3.head_object(Bucket=moto_stack.ingest, Key="models/m.pt", VersionId=v1)["ETag"]
    event = s3_event(moto_stack, "models/m.pt", None)
    body = json.loads(event["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["eTag"] = etag.strip('"')
    event["Records"][0]["body"] = json.dumps(body)

    # When it is processed
    moto_stack.invoke(event)

    # Then the scan is of v1 (benign), not of the newer current version
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/m.pt")
    assert record is not None and record.version_id == v1 and record.verdict is Verdict.ALLOWED


def test_out_of_order_events_never_roll_consumers_back(moto_stack: MotoStack) -> None:
    # Given two benign versions of one model
    v1_body, v2_body = benign_checkpoint("v1"), benign_checkpoint("v2")
    v1 = moto_stack.put("models/m.pt", v1_body)
    v2 = moto_stack.put("models/m.pt", v2_body)

    # When v2's event is processed before v1's
    moto_stack.invoke(s3_event(moto_stack, "models/m.pt", v2))
    moto_stack.invoke(s3_event(moto_stack, "models/m.pt", v1))

    # Then consumers' key still holds v2, and v1 has its own encrypted copy under versions/
    states = {s.version_id: s for s in artifacts(moto_stack).versions(f"{moto_stack.ingest}/models/m.pt")}
    assert states[v2].vault_key == "models/m.pt"
    assert states[v1].vault_key == f"versions/{v1}/models/m.pt"
    current = moto_stack.s3.get_object(Bucket=moto_stack.vault, Key="models/m.pt")
    assert current["VersionId"] == states[v2].vault_version_id


def test_records_round_trip_through_the_store(moto_stack: MotoStack) -> None:
    # Given a scanned artifact, When its record is read back, Then it validates as a ScanRecord with timings
    version = moto_stack.put("models/classifier.pt", benign_checkpoint())
    moto_stack.invoke(s3_event(moto_stack, "models/classifier.pt", version))
    item = all_scan_records(moto_stack)[0]
    record = ScanRecord.model_validate(json.loads(json.dumps(item, default=float)))
    assert set(record.timings_ms) >= {"download", "scan", "encrypt"}


def _runtime(stack: MotoStack) -> Any:
    import inspect

    return inspect.unwrap(stack.handler).__globals__["batch"].runtime


def test_an_artifact_over_the_ranged_limit_is_an_error_verdict_not_a_retry_loop(
    moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a function whose ephemeral storage has less room than the artifact (the disk figure is the
    # test's, not the machine's: another process freeing disk must not change the outcome), and a
    # ranged-path limit below the artifact's size
    from modelshield import workfiles

    body = benign_checkpoint()
    version = moto_stack.put("models/huge.pt", body)
    monkeypatch.setattr(workfiles, "free_disk", lambda _path: len(body) - 1)
    runtime = _runtime(moto_stack)
    monkeypatch.setattr(
        runtime, "settings", runtime.settings.model_copy(update={"max_ranged_bytes": len(body) - 1})
    )

    # When its event is processed
    response = moto_stack.invoke(s3_event(moto_stack, "models/huge.pt", version))

    # Then the message is consumed, the verdict is ERROR with what to do, and the object is tagged
    assert response["batchItemFailures"] == []
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/huge.pt")
    assert record is not None and record.verdict is Verdict.ERROR
    assert "ephemeral storage" in record.message and "MAX_RANGED_BYTES" in record.message
    assert tags(moto_stack, "models/huge.pt", version)["modelshield-verdict"] == "ERROR"
    assert vault_versions(moto_stack) == []


@pytest.mark.parametrize("malicious", [False, True], ids=["benign", "malicious"])
def test_an_artifact_larger_than_ephemeral_storage_is_scanned_by_ranges_and_encrypted_by_parts(
    moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch, malicious: bool
) -> None:
    # Given a 12 MiB artifact in a zip-based format, and ephemeral storage with room for 1 MiB only
    import io
    import zipfile

    from modelshield import large_objects, workfiles

    from tests.corpus.formats import EVIL_PICKLE, safetensors_raw

    size = 12 * 1024 * 1024
    weights = {"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model.safetensors", safetensors_raw(weights, os.urandom(size)))
        if malicious:
            archive.writestr("extra/data.pkl", EVIL_PICKLE)
    body = buffer.getvalue()
    version = moto_stack.put("models/big.zip", body)
    monkeypatch.setattr(workfiles, "free_disk", lambda _path: 1024 * 1024)
    monkeypatch.setattr(large_objects, "HASH_RANGE", 5 * 1024 * 1024)
    opened: list[int] = []
    real_open = large_objects.RangedArtifact.open.__func__

    def spy(cls: Any, *args: Any, **kwargs: Any) -> Any:
        artifact = real_open(cls, *args, **kwargs)
        opened.append(artifact.size)
        return artifact

    monkeypatch.setattr(large_objects.RangedArtifact, "open", classmethod(spy))

    # When its event is processed
    response = moto_stack.invoke(s3_event(moto_stack, "models/big.zip", version))

    # Then it took the ranged path (nothing spooled) and got a verdict with the object's sha256
    assert response["batchItemFailures"] == []
    assert opened == [len(body)]
    record = scans(moto_stack).latest(f"{moto_stack.ingest}/models/big.zip")
    assert record is not None
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    if malicious:
        assert record.verdict is Verdict.BLOCKED
        assert record.encryption_state.value == "QUARANTINED"
    else:
        assert record.verdict.releases
        assert record.encryption_state.value == "ENCRYPTED"
    # and its vault copy is a multipart message that the official library decrypts to the original
    state = artifacts(moto_stack).get(f"{moto_stack.ingest}/models/big.zip", version)
    assert state is not None and state.vault_key
    message = moto_stack.s3.get_object(
        Bucket=moto_stack.vault, Key=state.vault_key, VersionId=state.vault_version_id
    )["Body"].read()
    plaintext, context = official_decrypt(moto_stack, message, state.wrapping_key_arn)
    assert hashlib.sha256(plaintext).hexdigest() == record.sha256 == context[CTX_SHA256]


def test_a_rescan_releases_a_model_that_a_relaxed_group_now_allows(moto_stack: MotoStack) -> None:
    # Given a partner group that blocks pickle-based formats, and a checkpoint it quarantined
    from modelshield.policy.groups import load_groups
    from modelshield.rescan import artifacts_of_group, enqueue_rescans
    from modelshield.store.groups import GroupStore

    groups = GroupStore(moto_stack.env["GROUPS_TABLE"], moto_stack.dynamodb)
    strict = f"""groups:
  - name: Partner-S3-Audit
    sources: [{{type: s3, bucket: "{moto_stack.ingest}", prefix: partner/}}]
    rules:
      MS-FORMAT-SAFE: {{blocking: true, settings: {{pickle_based: deny}}}}
"""
    groups.put(load_groups(strict)[0])
    version = moto_stack.put("partner/acme/model.pt", benign_checkpoint())
    moto_stack.deliver_queued()
    first = scans(moto_stack).latest(f"{moto_stack.ingest}/partner/acme/model.pt")
    assert first is not None and first.verdict is Verdict.BLOCKED

    # When the group is relaxed and its artifacts are rescanned
    relaxed = strict.replace("blocking: true", "blocking: false")
    groups.put(load_groups(relaxed)[0])
    states = artifacts_of_group(artifacts(moto_stack).all(), groups.list(), "Partner-S3-Audit")
    # (the plaintext upload is gone by now: the rescan judges the recorded quarantine copy)
    assert (
        moto_stack.s3.list_object_versions(Bucket=moto_stack.ingest, Prefix="partner/").get("Versions", [])
        == []
    )
    enqueue_rescans(moto_stack.sqs, moto_stack.rescan_queue_url, states)
    assert moto_stack.deliver_rescans()["batchItemFailures"] == []

    # Then the model is released to consumers' key, encrypted, and the quarantine copy stays as history
    state = artifacts(moto_stack).get(f"{moto_stack.ingest}/partner/acme/model.pt", version)
    assert state is not None and state.verdict is Verdict.ALLOWED_WITH_WARNINGS
    assert state.encryption_state.value == "ENCRYPTED" and state.vault_key == "partner/acme/model.pt"
    keys = sorted(v["Key"] for v in vault_versions(moto_stack))
    assert keys == ["partner/acme/model.pt", "quarantine/partner/acme/model.pt"]
    rescan = scans(moto_stack).latest(state.artifact_id, version)
    assert rescan is not None and rescan.trigger == "rescan" and rescan.sha256 == first.sha256
