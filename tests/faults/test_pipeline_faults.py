"""The scan pipeline under injected faults: one failure at each step, once and persistently, then the
invariants (tests/faults/harness.py) after SQS has retried. Each test names the finding of issue 11 it
pins down."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.models import ScanRecord, Verdict

from tests.builders import MotoStack
from tests.faults.harness import (
    RELEASING_TAGS,
    Faults,
    bucket_is,
    check_invariants,
    dead_letters,
    drain,
    ingest_tag,
    scan_records,
    table_is,
    vault_versions,
)


def upload(stack: MotoStack, key: str, body: bytes) -> dict[tuple[str, str], bytes]:
    return {(key, stack.put(key, body)): body}


# -- finding 1: the order of writes -------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
def test_a_failed_artifact_state_write_leaves_one_record_and_one_vault_version(
    stack: MotoStack, faults: Faults, workdir: Path, times: int
) -> None:
    # Given an upload, and the artifacts table failing the write of its state
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    faults.fail("dynamodb", "PutItem", times=times, when=table_is(stack.env["ARTIFACTS_TABLE"]))
    faults.fail("dynamodb", "TransactWriteItems", times=times, when=table_is(stack.env["ARTIFACTS_TABLE"]))

    # When SQS retries until it succeeds
    drain(stack)

    # Then one record, one vault version, the right tag, no orphan
    check_invariants(stack, uploads, workdir=workdir)
    assert len(vault_versions(stack)) == 1


def test_a_failed_scan_record_write_and_its_retry_leave_one_vault_version(
    stack: MotoStack, faults: Faults, workdir: Path
) -> None:
    # Given the scans table failing once
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    faults.fail("dynamodb", "PutItem", when=table_is(stack.env["SCANS_TABLE"]))
    faults.fail("dynamodb", "TransactWriteItems", when=table_is(stack.env["SCANS_TABLE"]))

    # When SQS retries
    drain(stack)

    # Then the retry did not leave a second, orphan ciphertext behind
    check_invariants(stack, uploads, workdir=workdir)
    assert len(vault_versions(stack)) == 1


def test_a_scans_table_that_keeps_failing_leaves_no_ciphertext_without_a_record(
    stack: MotoStack, faults: Faults
) -> None:
    # Given the scans table failing every write
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    faults.fail("dynamodb", "PutItem", times=None, when=table_is(stack.env["SCANS_TABLE"]))
    faults.fail("dynamodb", "TransactWriteItems", times=None, when=table_is(stack.env["SCANS_TABLE"]))

    # When SQS gives up
    drain(stack)

    # Then the message is in the DLQ, and nothing was released without a record
    assert len(dead_letters(stack)) == 1
    assert vault_versions(stack) == [], "ciphertext at consumers' key with no scan record"
    ((key, version),) = uploads
    assert ingest_tag(stack, key, version) not in RELEASING_TAGS


def test_a_failed_tag_write_is_reapplied_when_the_event_is_retried(
    stack: MotoStack, faults: Faults, workdir: Path
) -> None:
    # Given the ingest tag write failing once
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    faults.fail("s3", "PutObjectTagging", when=bucket_is(stack.ingest))

    # When SQS retries
    drain(stack)

    # Then the retry (an "already processed" version) still tags the object
    check_invariants(stack, uploads, workdir=workdir)
    ((key, version),) = uploads
    assert ingest_tag(stack, key, version) == "ALLOWED"


STRICT_PARTNER = """groups:
  - name: Partner-S3-Audit
    sources: [{{type: s3, bucket: "{bucket}", prefix: partner/}}]
    rules:
      MS-FORMAT-SAFE: {{blocking: {blocking}, settings: {{pickle_based: deny}}}}
"""


def _partner_group(stack: MotoStack, blocking: bool) -> None:
    from modelshield.policy.groups import load_groups
    from modelshield.store.groups import GroupStore

    text = STRICT_PARTNER.format(bucket=stack.ingest, blocking=str(blocking).lower())
    GroupStore(stack.env["GROUPS_TABLE"], stack.dynamodb).put(load_groups(text)[0])


def _rescan_partner(stack: MotoStack) -> None:
    from modelshield.rescan import artifacts_of_group, enqueue_rescans
    from modelshield.store.artifacts import ArtifactStore
    from modelshield.store.groups import GroupStore

    groups = GroupStore(stack.env["GROUPS_TABLE"], stack.dynamodb).list()
    states = artifacts_of_group(
        ArtifactStore(stack.env["ARTIFACTS_TABLE"], stack.dynamodb).all(), groups, "Partner-S3-Audit"
    )
    enqueue_rescans(stack.sqs, stack.queue_url, states)


def test_a_rescan_to_blocked_whose_tag_write_keeps_failing_never_leaves_a_releasing_tag(
    stack: MotoStack, faults: Faults
) -> None:
    # Given a model released with warnings by a lenient partner group
    _partner_group(stack, blocking=False)
    uploads = upload(stack, "partner/acme/model.pt", benign_checkpoint())
    drain(stack)
    ((key, version),) = uploads
    assert ingest_tag(stack, key, version) == "ALLOWED_WITH_WARNINGS"

    # When the group turns strict, and the rescan's tag write keeps failing
    _partner_group(stack, blocking=True)
    faults.fail("s3", "PutObjectTagging", times=None, when=bucket_is(stack.ingest))
    _rescan_partner(stack)
    drain(stack)

    # Then the ingest object is no longer readable as released, and the rescan was recorded once
    assert ingest_tag(stack, key, version) not in RELEASING_TAGS
    rescans = [r for r in scan_records(stack) if r.trigger == "rescan"]
    assert len(rescans) == 1, [r.verdict.value for r in rescans]
    assert rescans[0].verdict in (Verdict.BLOCKED, Verdict.ERROR)

    # And once the tag write works again, a retry settles everything
    faults.clear()
    _rescan_partner(stack)
    drain(stack)
    check_invariants(stack, uploads)
    assert ingest_tag(stack, key, version) == "BLOCKED"


def test_a_blocked_upload_whose_tag_write_fails_is_never_tagged_releasing(
    stack: MotoStack, faults: Faults, workdir: Path
) -> None:
    # Given a malicious upload whose tag write fails once
    uploads = upload(stack, "models/evil.pkl", malicious_pickle())
    faults.fail("s3", "PutObjectTagging", when=bucket_is(stack.ingest))

    # When SQS retries
    drain(stack)

    # Then it is BLOCKED, tagged so, and nothing of it sits at a consumer key
    check_invariants(stack, uploads, workdir=workdir)
    ((key, version),) = uploads
    assert ingest_tag(stack, key, version) == "BLOCKED"
    assert [v["Key"] for v in vault_versions(stack)] == ["quarantine/models/evil.pkl"]


@pytest.mark.parametrize(
    ("service", "operation", "bucket"),
    [
        ("kms", "GenerateDataKey", None),
        ("s3", "GetObject", "ingest"),
        ("s3", "PutObject", "vault"),
        ("s3", "HeadObject", "vault"),
    ],
    ids=["kms-data-key", "s3-get-ingest", "s3-put-vault", "s3-head-vault"],
)
def test_a_transient_failure_at_any_step_recovers_on_retry(
    stack: MotoStack, faults: Faults, workdir: Path, service: str, operation: str, bucket: str | None
) -> None:
    # Given one failure of one call of the pipeline
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    uploads |= upload(stack, "models/evil.pkl", malicious_pickle())
    when = bucket_is(stack.ingest if bucket == "ingest" else stack.vault) if bucket else None
    faults.fail(service, operation, when=when, code="ServiceUnavailable", status=503)

    # When SQS retries, Then everything is consistent
    drain(stack)
    check_invariants(stack, uploads, workdir=workdir)
    assert dead_letters(stack) == []


# -- finding 3: infrastructure failures end as recorded ERROR verdicts ---------------------------------


def _disable_key(stack: MotoStack, faults: Faults) -> str:
    alias = stack.env["KMS_KEY_ID"]
    key_id = stack.kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    stack.kms.disable_key(KeyId=key_id)
    faults.fail(  # moto does not refuse data keys of a disabled key: answer as KMS does
        "kms",
        "GenerateDataKey",
        times=None,
        code="DisabledException",
        status=400,
        message=f"arn:aws:kms:us-east-1:123456789012:key/{key_id} is disabled.",
    )
    return "disabled"


def _delete_vault(stack: MotoStack, faults: Faults) -> str:
    stack.s3.delete_bucket(Bucket=stack.vault)
    return "NoSuchBucket"


def _delete_artifacts_table(stack: MotoStack, faults: Faults) -> str:
    stack.dynamodb.Table(stack.env["ARTIFACTS_TABLE"]).delete()
    return "ResourceNotFound"


def _deny_reads(stack: MotoStack, faults: Faults) -> str:
    faults.fail(
        "s3",
        "GetObject",
        times=None,
        when=bucket_is(stack.ingest),
        code="AccessDenied",
        status=403,
        message="Access Denied",
    )
    return "AccessDenied"


def _throttle_kms(stack: MotoStack, faults: Faults) -> str:
    faults.fail(
        "kms",
        "GenerateDataKey",
        times=None,
        code="ThrottlingException",
        status=400,
        message="Rate exceeded",
    )
    return "ThrottlingException"


@pytest.mark.parametrize(
    "breakage",
    [_disable_key, _delete_vault, _delete_artifacts_table, _deny_reads, _throttle_kms],
    ids=["kms-key-disabled", "vault-bucket-missing", "artifacts-table-missing", "access-denied", "throttled"],
)
def test_an_infrastructure_failure_ends_as_a_recorded_error_verdict_before_the_dlq(
    stack: MotoStack, faults: Faults, workdir: Path, breakage: object
) -> None:
    # Given an upload and a persistent infrastructure failure (and a note of every verdict announced)
    import inspect

    runtime = inspect.unwrap(stack.handler).__globals__["batch"].runtime
    announced: list[ScanRecord] = []
    runtime.publisher = type("Announced", (), {"publish": staticmethod(announced.append)})()
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    reason = breakage(stack, faults)  # type: ignore[operator]

    # When SQS has retried as often as the queue allows
    drain(stack)

    # Then an ERROR verdict is recorded, saying what failed and what to do
    ((key, version),) = uploads
    records = [r for r in scan_records(stack) if r.version_id == version]
    assert len(records) == 1, [r.verdict.value for r in records]
    assert records[0].verdict is Verdict.ERROR
    assert reason.lower() in records[0].message.lower()
    assert "dlq redrive" in records[0].message
    assert ingest_tag(stack, key, version) not in RELEASING_TAGS
    assert list(workdir.glob("artifact-*")) == []
    # and it is announced like any verdict (the BLOCKED/ERROR notification)
    assert [(r.scan_id, r.verdict) for r in announced] == [(records[0].scan_id, Verdict.ERROR)]


# -- finding 4: consistent records for deletions ------------------------------------------------------


def test_an_object_deleted_during_its_scan_gets_one_consistent_record(
    stack: MotoStack, faults: Faults, workdir: Path
) -> None:
    # Given an upload whose version is deleted while it is being scanned (after the download)
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    ((key, version),) = uploads
    faults.on(
        "kms",
        "GenerateDataKey",
        times=1,
        action=lambda _: stack.s3.delete_object(Bucket=stack.ingest, Key=key, VersionId=version),
    )

    # When the event (as S3 sent it) is processed and retried
    drain(stack)

    # Then there is one record of that version, and no ERROR contradicting it
    records = scan_records(stack)
    assert [r.version_id for r in records] == [version], [(r.version_id, r.verdict.value) for r in records]
    assert records[0].verdict is Verdict.ALLOWED
    assert dead_letters(stack) == []


def test_a_deleted_version_without_a_version_id_is_never_recorded_as_null(
    stack: MotoStack, faults: Faults
) -> None:
    # Given an upload whose only version is deleted before its event (which has no versionId) arrives
    ((key, version),) = upload(stack, "models/gone.pt", benign_checkpoint())
    stack.s3.delete_object(Bucket=stack.ingest, Key=key, VersionId=version)

    # When the event is processed
    drain(stack)

    # Then no record claims a version "null" of the versioned bucket, and the message is consumed
    assert [r.version_id for r in scan_records(stack) if r.version_id == "null"] == []
    assert dead_letters(stack) == []


# -- finding 5: leftovers ------------------------------------------------------------------------------


def test_stale_work_files_of_a_killed_worker_are_swept(stack: MotoStack, workdir: Path) -> None:
    # Given plaintext left in the work directory by a worker that was killed mid-scan
    workdir.mkdir(parents=True, exist_ok=True)
    stale = workdir / "artifact-killed"
    stale.write_bytes(b"plaintext of an earlier scan")
    import os
    import time

    old = time.time() - 7200
    os.utime(stale, (old, old))

    # When the next record is processed
    uploads = upload(stack, "models/a.pt", benign_checkpoint())
    drain(stack)

    # Then the stale file is gone
    check_invariants(stack, uploads, workdir=workdir)
    assert not stale.exists()


# -- finding 6: no listing of the whole bucket per event ----------------------------------------------


def test_events_without_a_version_id_are_pinned_without_listing_the_bucket(
    stack: MotoStack, faults: Faults
) -> None:
    # Given uploads whose events (as moto sends them) carry no versionId
    uploads: dict[tuple[str, str], bytes] = {}
    for n in range(4):
        uploads |= upload(stack, f"models/m{n}.pt", benign_checkpoint(f"m{n}"))

    # When they are processed
    drain(stack)

    # Then each was pinned to its version without ListObjectVersions (moto copies the whole bucket)
    assert faults.count("s3", "ListObjectVersions") == 0
    check_invariants(stack, uploads)
