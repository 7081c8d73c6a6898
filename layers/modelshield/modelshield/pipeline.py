"""scan → decide → encrypt → record: the one pipeline every entry point shares (Lambda, local stack, jobs).

For one object version it:
1. streams the object to ephemeral storage while hashing it (memory stays flat; the scanners need seeks);
2. resolves the security group that owns the object's source and gathers the metadata its rules need;
3. scans the bytes (never executing them) and evaluates the group's rules into a verdict;
4. envelope-encrypts the artifact into the vault: released verdicts under the artifact's key, everything
   else under `quarantine/` — the ingest object is never modified except for its verdict tag;
5. records the scan (append-only), the artifact version's state (optimistic locking) and tags the object.

Fail closed: a scanner problem is an ERROR verdict, and ERROR is quarantined like BLOCKED. Nothing lost:
the ingest object stays untouched; the vault copy is verified by the crypto layer before it is recorded.
Idempotent per object version: an already-recorded version is a no-op, whatever the event delivery does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from modelshield import scanning
from modelshield.aws import is_not_found
from modelshield.config import ScanSettings
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import encrypt_to_s3
from modelshield.errors import ArtifactTooLarge
from modelshield.events import ObjectEvent
from modelshield.models import (
    ArtifactRef,
    ArtifactState,
    EncryptionState,
    Finding,
    Format,
    RuleId,
    RuleResult,
    RuleStatus,
    ScanRecord,
    Severity,
    Verdict,
    encryption_context,
    utcnow,
)
from modelshield.notify import VerdictPublisher
from modelshield.observability import logger
from modelshield.policy.engine import SIDECAR_MESSAGE, evaluate
from modelshield.policy.gather import gather_metadata
from modelshield.policy.groups import SecurityGroup
from modelshield.policy.sources import resolve_group
from modelshield.s3_metadata import S3Object
from modelshield.scanning.registry import Limits
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.groups import GroupStore
from modelshield.store.scans import ScanStore

VERDICT_TAG = "modelshield-verdict"
SCAN_TAG = "modelshield-scan-id"
DOWNLOAD_CHUNK = 8 * 1024 * 1024
DISK_HEADROOM = 64 * 1024 * 1024  # left free on ephemeral storage for scanner spools and the OS


@dataclass
class Runtime:
    """Everything the pipeline talks to. Built once per Lambda container by `modelshield.wiring.runtime`."""

    settings: ScanSettings
    s3: Any
    kms: Any
    scans: ScanStore
    artifacts: ArtifactStore
    groups: GroupStore
    publisher: VerdictPublisher | None = None  # announces each recorded verdict (notify.py)


def resolve_version(s3: Any, event: ObjectEvent) -> ObjectEvent:
    """Pin the event to an object version. Real S3 events on versioned buckets carry versionId; when one
    does not (moto, or an unversioned bucket), match the event's eTag among the key's versions — taking
    "the current version" instead would scan the wrong bytes when events arrive out of order."""
    if event.version_id:
        return event
    etag = (event.etag or "").strip('"')
    candidates: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=event.bucket, Prefix=event.key):
        candidates.extend(v for v in page.get("Versions", []) if v["Key"] == event.key)
    matching = [v for v in candidates if v["ETag"].strip('"') == etag] or ([] if etag else candidates)
    if not matching:
        return event  # deleted (or overwritten and deleted) before we got here: recorded as an error later
    newest = max(matching, key=lambda v: v["LastModified"])
    return event.model_copy(update={"version_id": newest["VersionId"]})


@dataclass
class _Download:
    path: Path
    sha256: str
    size: int
    last_modified: Any
    version_id: str


def _download(s3: Any, ref: ArtifactRef, workdir: Path) -> _Download:
    """Stream one object version to a private temp file, hashing on the way. Memory stays flat."""
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id and ref.version_id != "null":
        kwargs["VersionId"] = ref.version_id
    response = s3.get_object(**kwargs)
    length = int(response.get("ContentLength") or 0)
    free = shutil.disk_usage(workdir).free - DISK_HEADROOM
    if length > free:
        response["Body"].close()
        raise ArtifactTooLarge(
            f"object {ref.uri} is {length} bytes but this function has {max(free, 0)} bytes of ephemeral "
            "storage free: raise the ScanFunction's EphemeralStorage (up to 10 GB) or split the artifact. "
            "It was not scanned and stays blocked."
        )
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix="artifact-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as out:
            body = response["Body"]
            while chunk := body.read(DOWNLOAD_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return _Download(
        path=Path(name),
        sha256=digest.hexdigest(),
        size=size,
        last_modified=response.get("LastModified"),
        version_id=response.get("VersionId") or ref.version_id or "null",
    )


def _scan_ref(version_id: str, scan_id: str) -> str:
    return f"{utcnow().strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{version_id}#{scan_id}"


def _scan_record(ref: ArtifactRef, scan_id: str, **fields: Any) -> ScanRecord:
    """The one place a ScanRecord is built: identity, sort key and time from the object version."""
    version = ref.version_id or "null"
    return ScanRecord(
        artifact_id=ref.artifact_id,
        scan_ref=_scan_ref(version, scan_id),
        scan_id=scan_id,
        bucket=ref.bucket,
        key=ref.key,
        version_id=version,
        scanned_at=utcnow(),
        **fields,
    )


def _error_record(ref: ArtifactRef, message: str, *, trigger: str) -> ScanRecord:
    """A scan that could not happen (object gone, unreadable): ERROR, with the reason for the user."""
    finding = Finding(rule=RuleId.SCAN_INCOMPLETE, severity=Severity.HIGH, message=message, location=ref.uri)
    return _scan_record(
        ref,
        uuid.uuid4().hex,
        sha256=None,
        size=0,
        format=Format.UNKNOWN,
        verdict=Verdict.ERROR,
        group="",
        group_version=0,
        rules=[
            RuleResult(
                rule=RuleId.SCAN_INCOMPLETE,
                status=RuleStatus.ERROR,
                blocking=True,
                severity=Severity.HIGH,
                message=message,
                findings=[finding],
            )
        ],
        findings=[finding],
        scanner_version=scanning.registry.SCANNER_VERSION,
        trigger=trigger,
        message=message,
    )


def _vault_key(rt: Runtime, ref: ArtifactRef, verdict: Verdict, last_modified: Any) -> str:
    """Where the encrypted copy goes. Consumers read `<key>`: it always holds the newest released version;
    a released version that arrives after a newer one was released lands under `versions/` instead, so an
    out-of-order event never rolls consumers back. Everything not released goes to quarantine/."""
    if not verdict.releases:
        return f"{rt.settings.quarantine_prefix}{ref.key}"
    released = {
        s.version_id: s
        for s in rt.artifacts.versions(ref.artifact_id)
        if s.version_id != ref.version_id and s.verdict.releases and s.vault_key == ref.key
    }
    if not released:
        return ref.key
    newer = _versions_newer_than(rt.s3, ref)
    if newer is None:  # our version is gone from the listing: fall back to timestamps
        newer = {
            v
            for v, s in released.items()
            if s.last_modified and last_modified and s.last_modified > last_modified
        }
    return f"versions/{ref.version_id}/{ref.key}" if newer & released.keys() else ref.key


def _versions_newer_than(s3: Any, ref: ArtifactRef) -> set[str] | None:
    """Version ids of the key that S3 lists before ours (S3 lists a key's versions newest first, which is
    exact even when two uploads share a LastModified second). None if our version is not listed."""
    seen: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=ref.bucket, Prefix=ref.key):
        for version in page.get("Versions", []):
            if version["Key"] != ref.key:
                continue
            if version["VersionId"] == ref.version_id:
                return set(seen)
            seen.append(version["VersionId"])
    return None


def _tag_verdict(s3: Any, ref: ArtifactRef, verdict: Verdict, scan_id: str) -> None:
    """Tag the ingest object version with its verdict (bucket policy denies reads of untagged/blocked)."""
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id and ref.version_id != "null":
        kwargs["VersionId"] = ref.version_id
    existing = s3.get_object_tagging(**kwargs).get("TagSet", [])
    tags = {t["Key"]: t["Value"] for t in existing if t["Key"] not in (VERDICT_TAG, SCAN_TAG)}
    tags[VERDICT_TAG] = verdict.value
    tags[SCAN_TAG] = scan_id
    s3.put_object_tagging(
        **kwargs, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in list(tags.items())[-10:]]}
    )


def process_object(
    event: ObjectEvent,
    rt: Runtime,
    *,
    trigger: str = "upload",
    time_budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ScanRecord:
    """Scan, decide, encrypt and record one object version. Returns the scan record it wrote (or found)."""
    settings = rt.settings
    if event.bucket == settings.buckets.vault:
        raise ValueError("refusing to process an object from the vault bucket (would recurse)")
    event = resolve_version(rt.s3, event)
    ref = ArtifactRef(bucket=event.bucket, key=event.key, version_id=event.version_id)
    logger.append_keys(artifact=ref.artifact_id, version=ref.version_id)

    if ref.version_id and trigger == "upload":
        known = rt.artifacts.get(ref.artifact_id, ref.version_id)
        if known is not None and known.encryption_state in (
            EncryptionState.ENCRYPTED,
            EncryptionState.QUARANTINED,
        ):
            previous = rt.scans.latest(ref.artifact_id, ref.version_id)
            if previous is not None:
                logger.info("already processed; nothing to do", extra={"verdict": known.verdict.value})
                return previous

    timings: dict[str, float] = {}
    started = clock()
    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        download = _download(rt.s3, ref, workdir)
    except ClientError as exc:
        if not is_not_found(exc):
            raise  # throttling, access denied...: let SQS retry, then the DLQ
        message = (
            f"object {ref.uri} (version {ref.version_id or 'unknown'}) no longer exists: it was deleted "
            "before it could be scanned. Nothing was released; upload it again to scan it."
        )
        record = _error_record(ref, message, trigger=trigger)
        rt.scans.append(record)
        logger.warning(message)
        return record
    except ArtifactTooLarge as exc:
        record = _error_record(ref, str(exc), trigger=trigger)
        rt.scans.append(record)
        _tag_verdict(rt.s3, ref, record.verdict, record.scan_id)
        logger.error(str(exc))
        return record
    ref = ArtifactRef(bucket=ref.bucket, key=ref.key, version_id=download.version_id)
    timings["download"] = (clock() - started) * 1000
    try:
        return _scan_and_store(
            event, rt, ref, download, timings, trigger=trigger, time_budget_s=time_budget_s
        )
    finally:
        download.path.unlink(missing_ok=True)


@dataclass
class Evaluated:
    """One downloaded object version scanned and judged under its security group (nothing written yet)."""

    group: SecurityGroup
    report: Any  # modelshield.models.ScanReport
    evaluation: Any  # the policy engine's evaluation: verdict, rules, group name and version

    @property
    def verdict(self) -> Verdict:
        return self.evaluation.verdict  # type: ignore[no-any-return]


def download_object(s3: Any, ref: ArtifactRef, workdir: Path) -> _Download:
    """Stream one object version to ephemeral storage, hashing it (bulk jobs share this with uploads)."""
    return _download(s3, ref, workdir)


def evaluate_download(
    rt: Runtime,
    ref: ArtifactRef,
    download: _Download,
    *,
    principal: str | None = None,
    time_budget_s: float | None = None,
) -> Evaluated:
    """Resolve the owning group, gather the metadata its rules need, scan the bytes and evaluate them."""
    group, source = resolve_group(rt.groups.effective(), ref.bucket, ref.key)
    metadata = gather_metadata(
        S3Object(rt.s3, ref.bucket, ref.key, ref.version_id, workdir=download.path.parent),
        ref.key,
        source,
        event_principal=principal,
        artifact_path=download.path,
    )
    timeout = rt.settings.scan_timeout_seconds
    if time_budget_s is not None:
        timeout = max(1.0, min(timeout, time_budget_s))
    report = scanning.scan_path(
        download.path, limits=Limits(timeout_seconds=timeout), display_name=ref.key, sha256=download.sha256
    )
    return Evaluated(group, report, evaluate(report, group, metadata, artifact_key=ref.key))


def build_scan_record(
    ref: ArtifactRef,
    download: _Download,
    evaluated: Evaluated,
    *,
    scan_id: str,
    state: EncryptionState,
    vault_uri: str | None,
    trigger: str,
    timings: dict[str, float] | None = None,
) -> ScanRecord:
    """The append-only scan record of one evaluation (uploads, rescans and bulk jobs)."""
    evaluation, report = evaluated.evaluation, evaluated.report
    return _scan_record(
        ref,
        scan_id,
        sha256=download.sha256,
        size=download.size,
        format=report.format,
        verdict=evaluation.verdict,
        group=evaluation.group,
        group_version=evaluation.group_version,
        rules=evaluation.rules,
        findings=report.findings,
        scanner_version=report.scanner_version,
        timings_ms={k: round(v, 3) for k, v in (timings or {}).items()},
        encryption_state=state,
        vault_uri=vault_uri,
        trigger=trigger,
        message=_summary(evaluation.rules, evaluation.verdict, evaluation.message),
    )


def _scan_and_store(
    event: ObjectEvent,
    rt: Runtime,
    ref: ArtifactRef,
    download: _Download,
    timings: dict[str, float],
    *,
    trigger: str,
    time_budget_s: float | None,
) -> ScanRecord:
    settings = rt.settings
    t0 = time.monotonic()
    evaluated = evaluate_download(
        rt, ref, download, principal=event.principal_id, time_budget_s=time_budget_s
    )
    group, report, evaluation = evaluated.group, evaluated.report, evaluated.evaluation
    timings["scan"] = (time.monotonic() - t0) * 1000

    scan_id = uuid.uuid4().hex
    verdict = evaluation.verdict
    t1 = time.monotonic()
    existing = rt.artifacts.get(ref.artifact_id, ref.version_id or "null")
    if existing is not None and existing.vault_key and existing.verdict.releases == verdict.releases:
        stored = None  # a rescan that does not change where the artifact belongs: the vault copy stands
    else:
        vault_key = _vault_key(rt, ref, verdict, download.last_modified)
        context = encryption_context(ref, sha256=download.sha256, group=group.name)
        stored = encrypt_to_s3(
            download.path,
            s3=rt.s3,
            keyring=KmsKeyring(rt.kms),
            key_id=group.kms_key_id or settings.kms_key_id,
            bucket=settings.buckets.vault,
            key=vault_key,
            context=context,
            frame_length=settings.frame_length,
            metadata={"modelshield-verdict": verdict.value, "modelshield-scan-id": scan_id},
        )
        timings["encrypt"] = (time.monotonic() - t1) * 1000
    state = EncryptionState.ENCRYPTED if verdict.releases else EncryptionState.QUARANTINED

    record = build_scan_record(
        ref,
        download,
        evaluated,
        scan_id=scan_id,
        state=state,
        vault_uri=_vault_uri(stored, existing),
        trigger=trigger,
        timings=timings,
    )
    rt.scans.append(record)
    save_artifact_state(rt, ref, record, download, stored, state, existing)
    if stored is not None and existing is not None and existing.verdict.releases and not verdict.releases:
        _withdraw_release(rt, existing)
    _tag_verdict(rt.s3, ref, verdict, scan_id)
    logger.info(
        "artifact scanned",
        extra={
            "verdict": verdict.value,
            "format": report.format.value,
            "group": group.name,
            "trigger": trigger,
        },
    )
    return record


def _vault_uri(stored: Any, existing: ArtifactState | None) -> str | None:
    if stored is not None:
        return f"s3://{stored.bucket}/{stored.key}?versionId={stored.version_id}"
    if existing is not None and existing.vault_key:
        return f"s3://{existing.vault_bucket}/{existing.vault_key}?versionId={existing.vault_version_id}"
    return None


def _withdraw_release(rt: Runtime, previous: ArtifactState) -> None:
    """A released artifact became blocked: its quarantine copy is written, verified and recorded (the caller
    did that first), so the consumer-facing vault version can now go. The ingest original stays."""
    if (
        previous.vault_key
        and previous.vault_version_id
        and not previous.vault_key.startswith(rt.settings.quarantine_prefix)
    ):
        rt.s3.delete_object(
            Bucket=previous.vault_bucket, Key=previous.vault_key, VersionId=previous.vault_version_id
        )
        logger.warning("release withdrawn", extra={"vault_key": previous.vault_key})


def _summary(rules: list[RuleResult], verdict: Verdict, evaluation_message: str = "") -> str:
    failed = [r for r in rules if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]
    if not failed:
        return evaluation_message if evaluation_message == SIDECAR_MESSAGE else "all enabled rules passed"
    parts = [f"{r.rule.value} {r.status.value}{' (blocking)' if r.blocking else ''}" for r in failed]
    return f"{verdict.value}: " + ", ".join(parts)


def save_artifact_state(
    rt: Runtime,
    ref: ArtifactRef,
    record: ScanRecord,
    download: _Download,
    stored: Any,
    state: EncryptionState,
    existing: ArtifactState | None,
) -> None:
    """Record the artifact version's current state (optimistic locking on `existing.revision`)."""
    if stored is None and existing is not None:  # verdict class unchanged: only the verdict and scan move on
        rt.artifacts.save(
            existing.model_copy(
                update={"verdict": record.verdict, "latest_scan_ref": record.scan_ref, "group": record.group}
            ),
            expected_revision=existing.revision,
        )
        return
    new = ArtifactState(
        artifact_id=ref.artifact_id,
        version_id=record.version_id,
        bucket=ref.bucket,
        key=ref.key,
        sha256=record.sha256,
        size=record.size,
        format=record.format,
        group=record.group,
        verdict=record.verdict,
        encryption_state=state,
        vault_bucket=stored.bucket,
        vault_key=stored.key,
        vault_version_id=stored.version_id,
        ciphertext_size=stored.size,
        wrapping_key_arn=stored.key_arn,
        data_key_created_at=record.scanned_at,
        last_modified=download.last_modified,
        latest_scan_ref=record.scan_ref,
        updated_at=utcnow(),
    )
    rt.artifacts.save(new, expected_revision=existing.revision if existing else None)
