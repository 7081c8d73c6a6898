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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from modelshield import scanning, workfiles
from modelshield.aws import is_not_found
from modelshield.config import ScanSettings
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import encrypt_to_s3
from modelshield.errors import ArtifactTooLarge
from modelshield.events import ObjectEvent
from modelshield.large_objects import RangedArtifact
from modelshield.models import (
    PURPOSE_ARTIFACT,
    PURPOSE_QUARANTINE,
    ArtifactRef,
    ArtifactState,
    EncryptionState,
    Finding,
    Format,
    RuleId,
    RuleResult,
    RuleStatus,
    ScanRecord,
    ScanReport,
    Severity,
    Verdict,
    encryption_context,
    utcnow,
)
from modelshield.notify import VerdictPublisher
from modelshield.observability import logger
from modelshield.plaintext import PlaintextLifetime, VaultSource, decrypt_vault_copy, replacement_verified
from modelshield.policy.engine import SIDECAR_MESSAGE, evaluate
from modelshield.policy.gather import gather_metadata
from modelshield.policy.groups import SecurityGroup
from modelshield.policy.sources import resolve_group
from modelshield.release import (
    META_ENVELOPE,
    META_FORMAT,
    META_SCAN_ID,
    META_SHA256,
    META_STATE,
    META_VERDICT,
    META_WRAPPING_KEY,
)
from modelshield.s3_metadata import S3Object
from modelshield.scanning.registry import Limits
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.groups import GroupStore
from modelshield.store.leases import LeaseStore
from modelshield.store.records import record_scan
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
    leases: LeaseStore
    publisher: VerdictPublisher | None = None  # announces each recorded verdict (notify.py)
    # Removes the plaintext upload once its vault copy is recorded (None: keep it, e.g. bare tests).
    lifetime: PlaintextLifetime | None = None
    # The RescanFunction: judge the recorded vault copy (decrypted into ephemeral storage), not the upload.
    read_vault: bool = False
    _key_arns: dict[str, str] = field(default_factory=dict)

    def key_arn(self, key_id: str) -> str:
        """The ARN behind a key id or alias (what S3 metadata and the artifacts table record)."""
        if key_id not in self._key_arns:
            self._key_arns[key_id] = str(self.kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])
        return self._key_arns[key_id]

    def sweep_workdir(self, *, older_than_seconds: float) -> None:
        """Remove plaintext work files no scan in this process is using (workfiles.py)."""
        removed = workfiles.sweep(Path(self.settings.workdir), older_than_seconds=older_than_seconds)
        if removed:
            logger.warning("removed stale plaintext work files", extra={"files": removed})


def resolve_version(s3: Any, event: ObjectEvent) -> ObjectEvent:
    """Pin the event to an object version. Real S3 events on versioned buckets carry versionId; when one
    does not (moto, or an unversioned bucket), the version is the one whose eTag the event names —
    taking "the current version" blindly would scan the wrong bytes when events arrive out of order.
    The current version is asked first (one HEAD); only when it is another upload, or gone, are the
    key's versions listed (moto copies the whole bucket on each listing, so never per event)."""
    if event.version_id:
        return event
    etag = (event.etag or "").strip('"')
    try:
        head = s3.head_object(Bucket=event.bucket, Key=event.key)
        if not etag or head.get("ETag", "").strip('"') == etag:
            return event.model_copy(update={"version_id": head.get("VersionId") or "null"})
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    candidates: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=event.bucket, Prefix=event.key):
        candidates.extend(v for v in page.get("Versions", []) if v["Key"] == event.key)
    matching = [v for v in candidates if v["ETag"].strip('"') == etag] or ([] if etag else candidates)
    if not matching:
        return event  # deleted (or overwritten and deleted) before we got here: see _object_gone
    newest = max(matching, key=lambda v: v["LastModified"])
    return event.model_copy(update={"version_id": newest["VersionId"]})


@dataclass
class _Download:
    """An object version spooled to a work file (the large-object path's twin is RangedArtifact)."""

    path: Path
    sha256: str
    size: int
    last_modified: Any
    version_id: str

    @property
    def artifact_path(self) -> Path | None:
        return self.path

    def scan(self, *, limits: Limits, display_name: str) -> ScanReport:
        return scanning.scan_path(self.path, limits=limits, display_name=display_name, sha256=self.sha256)

    def encrypt(self, **options: Any) -> Any:
        return encrypt_to_s3(self.path, **options)


def _download(s3: Any, ref: ArtifactRef, fd: int, path: Path) -> _Download:
    """Stream one object version into the work file `path` (open as `fd`), hashing on the way."""
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id and ref.version_id != "null":
        kwargs["VersionId"] = ref.version_id
    try:
        response = s3.get_object(**kwargs)
    except BaseException:
        os.close(fd)
        raise
    length = int(response.get("ContentLength") or 0)
    free = workfiles.free_disk(path.parent) - DISK_HEADROOM
    if length > free:
        os.close(fd)
        response["Body"].close()
        raise ArtifactTooLarge(
            f"object {ref.uri} is {length} bytes but this function has {max(free, 0)} bytes of ephemeral "
            "storage free",
            size=length,
        )
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        body = response["Body"]
        while chunk := body.read(DOWNLOAD_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return _Download(
        path=path,
        sha256=digest.hexdigest(),
        size=size,
        last_modified=response.get("LastModified"),
        version_id=response.get("VersionId") or ref.version_id or "null",
    )


def _scan_ref(version_id: str, scan_id: str) -> str:
    return f"{utcnow().strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{version_id}#{scan_id}"


class NoVaultCopy(ArtifactTooLarge):
    """A rescan found no verified vault copy: like an oversized object, it ends as a recorded ERROR."""


def _download_vault(rt: Runtime, ref: ArtifactRef, path: Path) -> _Download:
    """A rescan's input: the recorded vault (or quarantine) copy, decrypted and checked against the row."""
    state = rt.artifacts.get(ref.artifact_id, ref.version_id or "null")
    if state is None or not replacement_verified(state):
        raise NoVaultCopy(
            f"{ref.uri} has no recorded vault copy to rescan: upload it again to scan it. It stays blocked."
        )
    plain, sha256, size = decrypt_vault_copy(rt.s3, rt.kms, state, path.parent)
    plain.replace(path)  # into the work file the caller cleans up
    return _Download(
        path=path, sha256=sha256, size=size, last_modified=state.last_modified, version_id=state.version_id
    )


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


def attempt_scan_id(ref: ArtifactRef, *, trigger: str, request_id: str | None) -> str:
    """The scan id of one attempt: the same for every retry and duplicate of one upload (or of one rescan
    request), so a retry finds what an earlier try of the same attempt wrote instead of adding to it."""
    basis = "\0".join([ref.artifact_id, ref.version_id or "", trigger, request_id or ""])
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def error_record(
    ref: ArtifactRef, message: str, *, trigger: str, scan_id: str | None = None, etag: str | None = None
) -> ScanRecord:
    """A scan that could not happen (object gone, unreadable, infrastructure down): ERROR, with the
    reason and what to do, for the user."""
    scan_id = scan_id or uuid.uuid4().hex
    finding = Finding(rule=RuleId.SCAN_INCOMPLETE, severity=Severity.HIGH, message=message, location=ref.uri)
    unpinned = ref if ref.version_id else ref.model_copy(update={"version_id": "unknown"})
    return _scan_record(
        unpinned,
        scan_id,
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
        etag=etag,
    )


def _vault_key(rt: Runtime, ref: ArtifactRef, verdict: Verdict, last_modified: Any) -> str:
    """Where the encrypted copy goes. Consumers read `<key>`: it always holds the newest released version;
    a released version that arrives after a newer one was released lands under `versions/` instead, so an
    out-of-order event never rolls consumers back. Everything not released goes to quarantine/.
    Called under the artifact's lease, so the states read here cannot change until ours is recorded."""
    if not verdict.releases:
        return f"{rt.settings.quarantine_prefix}{ref.key}"
    released = {
        s.version_id: s
        for s in rt.artifacts.versions(ref.artifact_id)
        if s.version_id != ref.version_id and s.verdict.releases and s.vault_key == ref.key
    }
    if not released:
        return ref.key
    listed = _listed_versions(rt.s3, ref)
    newer = set(listed[: listed.index(ref.version_id)]) if ref.version_id in listed else set()
    # Released versions S3 no longer lists (their plaintext was removed once their vault copy was
    # recorded) are ordered by their recorded time; a tie counts as newer: never roll consumers back.
    newer |= {
        v
        for v, s in released.items()
        if v not in listed and (not (s.last_modified and last_modified) or s.last_modified >= last_modified)
    }
    return f"versions/{ref.version_id}/{ref.key}" if newer & released.keys() else ref.key


def _listed_versions(s3: Any, ref: ArtifactRef) -> list[str]:
    """Version ids of the key as S3 lists them, newest first (exact even when two uploads share a
    LastModified second)."""
    out: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=ref.bucket, Prefix=ref.key):
        out.extend(v["VersionId"] for v in page.get("Versions", []) if v["Key"] == ref.key)
    return out


def _version_kwargs(ref: ArtifactRef) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id and ref.version_id not in ("null", "unknown"):
        kwargs["VersionId"] = ref.version_id
    return kwargs


def tag_verdict(s3: Any, ref: ArtifactRef, verdict: Verdict, scan_id: str) -> bool:
    """Tag the ingest object version with its verdict (the bucket policy denies reads of untagged and
    not-released objects). Idempotent: a tag already right is left alone. Returns False when the version
    no longer exists (deleted: nothing left to tag). If a verdict that does not release cannot be written,
    the old tag is removed instead (untagged is unreadable), so a failed tag write never fails open."""
    kwargs = _version_kwargs(ref)
    try:
        existing = s3.get_object_tagging(**kwargs).get("TagSet", [])
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    tags = {t["Key"]: t["Value"] for t in existing}
    if tags.get(VERDICT_TAG) == verdict.value and tags.get(SCAN_TAG) == scan_id:
        return True
    others = {k: v for k, v in tags.items() if k not in (VERDICT_TAG, SCAN_TAG)}
    wanted = {**dict(list(others.items())[-8:]), VERDICT_TAG: verdict.value, SCAN_TAG: scan_id}
    try:
        s3.put_object_tagging(
            **kwargs, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in wanted.items()]}
        )
    except ClientError as exc:
        if is_not_found(exc):
            return False
        if verdict.releases or tags.get(VERDICT_TAG) not in RELEASING_TAGS:
            raise
        s3.delete_object_tagging(**kwargs)  # fail closed: an untagged version is unreadable
        logger.error(
            "could not write the verdict tag; removed the releasing tag instead",
            extra={"verdict": verdict.value, "error": str(exc)},
        )
    return True


RELEASING_TAGS = frozenset(v.value for v in Verdict if v.releases)


def process_object(
    event: ObjectEvent,
    rt: Runtime,
    *,
    trigger: str = "upload",
    time_budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ScanRecord:
    """Scan, decide, encrypt and record one object version. Returns the scan record it wrote (or found).

    The write order, under the artifact's lease, makes every retry finish what an earlier try started:
    1. encrypt into the vault (released: consumers' key; otherwise quarantine/), the object carrying this
       attempt's deterministic scan id; a copy an earlier try left is found and replaced, not doubled;
    2. for a verdict that does not release: tag the ingest version first, then withdraw a release;
    3. one transaction: the scan record + the version's state, conditioned on the state read in 1
       (a lost race or a retry of a recorded attempt becomes "already recorded", never a duplicate);
       if it fails, the ciphertext of step 1 is deleted, so nothing sits in the vault without a record;
    4. for a released verdict: tag the ingest version last (it is readable only once recorded).
    A version found recorded (early return, retry, duplicate) gets steps 2 and 4 re-applied."""
    settings = rt.settings
    if event.bucket == settings.buckets.vault:
        raise ValueError("refusing to process an object from the vault bucket (would recurse)")
    event = resolve_version(rt.s3, event)
    ref = ArtifactRef(bucket=event.bucket, key=event.key, version_id=event.version_id)
    logger.append_keys(artifact=ref.artifact_id, version=ref.version_id)
    try:
        return _process(event, rt, ref, trigger=trigger, time_budget_s=time_budget_s, clock=clock)
    finally:
        rt.sweep_workdir(older_than_seconds=settings.stale_work_seconds)


def _process(
    event: ObjectEvent,
    rt: Runtime,
    ref: ArtifactRef,
    *,
    trigger: str,
    time_budget_s: float | None,
    clock: Callable[[], float],
) -> ScanRecord:
    settings = rt.settings
    if not ref.version_id:
        return _object_gone(rt, ref, event, trigger=trigger)
    if trigger == "upload":
        known = rt.artifacts.get(ref.artifact_id, ref.version_id)
        if known is not None and known.encryption_state in (
            EncryptionState.ENCRYPTED,
            EncryptionState.QUARANTINED,
        ):
            previous = rt.scans.get(ref.artifact_id, known.latest_scan_ref)
            if previous is not None:
                logger.info("already processed; re-applying its tag", extra={"verdict": known.verdict.value})
                _finish(rt, ref, previous)
                return previous

    timings: dict[str, float] = {}
    started = clock()
    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workfiles.work_file(workdir) as (fd, path):
        try:
            download = _download_vault(rt, ref, path) if rt.read_vault else _download(rt.s3, ref, fd, path)
        except ClientError as exc:
            if not is_not_found(exc):
                raise  # throttling, access denied...: SQS retries; the last attempt records ERROR
            return _object_gone(rt, ref, event, trigger=trigger)
        except ArtifactTooLarge as exc:
            download = str(exc) if isinstance(exc, NoVaultCopy) else _too_large_to_spool(rt, ref, exc)
            if isinstance(download, str):
                record = error_record(ref, download, trigger=trigger, etag=event.etag)
                rt.scans.append(record)
                if not rt.read_vault:
                    tag_verdict(rt.s3, ref, record.verdict, record.scan_id)
                logger.error(download)
                return record
        ref = ArtifactRef(bucket=ref.bucket, key=ref.key, version_id=download.version_id)
        timings["download"] = (clock() - started) * 1000
        return _scan_and_store(
            event, rt, ref, download, timings, trigger=trigger, time_budget_s=time_budget_s
        )


def _too_large_to_spool(rt: Runtime, ref: ArtifactRef, exc: ArtifactTooLarge) -> RangedArtifact | str:
    """An object bigger than ephemeral storage: scanned by ranged reads and encrypted by parallel ranges
    (large_objects.py) up to `max_ranged_bytes`; beyond that, the reason for an ERROR verdict."""
    limit = rt.settings.max_ranged_bytes
    if exc.size is None or exc.size > limit:
        return (
            f"{exc}, and it is over the {limit}-byte limit of the ranged path (MAX_RANGED_BYTES): split "
            "the artifact (e.g. sharded safetensors) or raise the limit. It was not scanned and stays "
            "blocked."
        )
    head = rt.s3.head_object(**_version_kwargs(ref))
    logger.info("artifact too large to spool; scanning by ranged reads", extra={"size": exc.size})
    return RangedArtifact.open(rt.s3, ref, head, workers=rt.settings.range_workers)


def _object_gone(rt: Runtime, ref: ArtifactRef, event: ObjectEvent, *, trigger: str) -> ScanRecord:
    """The object (version) no longer exists. If this very upload was already recorded (a retry after the
    object was deleted), that record stands; otherwise an ERROR record says that nothing was released."""
    etag = (event.etag or "").strip('"')
    for record in rt.scans.history(ref.artifact_id):
        same_version = ref.version_id and record.version_id == ref.version_id
        same_upload = not ref.version_id and etag and (record.etag or "").strip('"') == etag
        if (same_version or same_upload) and (record.trigger == trigger or record.verdict.releases):
            logger.info("object deleted after it was recorded; the record stands")
            return record
    version = ref.version_id or "unknown"
    message = (
        f"object {ref.uri} (version {version}) no longer exists: it was deleted before it could be "
        "scanned. Nothing was released; upload it again to scan it."
    )
    if not ref.version_id:
        message += " (The event carried no version id, and no version with its eTag is left.)"
    record = error_record(ref, message, trigger=trigger, etag=event.etag)
    rt.scans.append(record)
    logger.warning(message)
    return record


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
    group, source = resolve_group(rt.groups.effective(), ref.bucket, ref.key)
    recorded_state = rt.artifacts.get(ref.artifact_id, ref.version_id or "null")
    upload = S3Object(rt.s3, ref.bucket, ref.key, ref.version_id, workdir=Path(settings.workdir))
    metadata = gather_metadata(
        VaultSource(recorded_state, upload) if rt.read_vault and recorded_state is not None else upload,
        ref.key,
        source,
        event_principal=event.principal_id,
        artifact_path=download.artifact_path,
    )
    forged = {k: v for k, v in metadata.tags.items() if k.startswith("modelshield-")}
    if forged and recorded_state is None and trigger == "upload" and rt.lifetime is not None:
        rt.lifetime.forged_tags(ref, forged)  # tags only ModelShield may set, already there on arrival
    timeout = settings.scan_timeout_seconds
    if time_budget_s is not None:
        timeout = max(1.0, min(timeout, time_budget_s))
    report = download.scan(limits=Limits(timeout_seconds=timeout), display_name=ref.key)
    evaluation = evaluate(report, group, metadata, artifact_key=ref.key)
    timings["scan"] = (time.monotonic() - t0) * 1000
    scan_id = attempt_scan_id(ref, trigger=trigger, request_id=event.request_id)
    verdict = evaluation.verdict

    with rt.leases.hold(ref.artifact_id, wait_seconds=settings.lease_wait_seconds):
        existing = rt.artifacts.get(ref.artifact_id, ref.version_id or "null")
        if existing is not None and existing.latest_scan_ref.endswith(f"#{scan_id}"):
            recorded = rt.scans.get(ref.artifact_id, existing.latest_scan_ref)
            if recorded is not None:  # an earlier try of this attempt got as far as the record
                _finish(rt, ref, recorded)
                return recorded
        if (
            existing is not None
            and existing.encryption_state is not EncryptionState.PLAINTEXT
            and (trigger == "upload")
        ):
            recorded = rt.scans.get(ref.artifact_id, existing.latest_scan_ref)
            if recorded is not None:  # another container recorded this upload while we scanned
                _finish(rt, ref, recorded)
                return recorded

        t1 = time.monotonic()
        stored = None
        if existing is None or not existing.vault_key or existing.verdict.releases != verdict.releases:
            vault_key = _vault_key(rt, ref, verdict, download.last_modified)
            _drop_unrecorded_copy(rt, vault_key, scan_id)
            purpose = PURPOSE_ARTIFACT if verdict.releases else PURPOSE_QUARANTINE
            context = encryption_context(ref, sha256=download.sha256, group=group.name, purpose=purpose)
            key_id = group.kms_key_id or settings.kms_key_id
            stored = download.encrypt(
                s3=rt.s3,
                keyring=KmsKeyring(rt.kms),
                key_id=key_id,
                bucket=settings.buckets.vault,
                key=vault_key,
                context=context,
                frame_length=settings.frame_length,
                metadata={
                    META_STATE: (
                        EncryptionState.ENCRYPTED if verdict.releases else EncryptionState.QUARANTINED
                    ).value,
                    META_FORMAT: report.format.value,
                    META_SHA256: download.sha256,
                    META_WRAPPING_KEY: rt.key_arn(key_id),
                    META_SCAN_ID: scan_id,
                    META_VERDICT: verdict.value,
                    META_ENVELOPE: "aws-encryption-sdk-v2",
                },
            )
            timings["encrypt"] = (time.monotonic() - t1) * 1000
        # else: a rescan that does not change where the artifact belongs: the vault copy stands
        state = EncryptionState.ENCRYPTED if verdict.releases else EncryptionState.QUARANTINED
        record = _scan_record(
            ref,
            scan_id,
            sha256=download.sha256,
            size=download.size,
            format=report.format,
            verdict=verdict,
            group=evaluation.group,
            group_version=evaluation.group_version,
            rules=evaluation.rules,
            findings=report.findings,
            scanner_version=report.scanner_version,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            encryption_state=state,
            vault_uri=_vault_uri(stored, existing),
            trigger=trigger,
            message=_summary(evaluation.rules, verdict, evaluation.message),
            etag=event.etag,
        )
        try:
            if (
                not verdict.releases and not rt.read_vault
            ):  # fail closed first: the ingest version stops being readable
                tag_verdict(rt.s3, ref, verdict, scan_id)
            _commit(rt, ref, record, download, stored, state, existing, metadata)
        except BaseException:
            if stored is not None:
                _delete_copy(rt, stored.key, stored.version_id)  # nothing in the vault without a record
            raise
        if stored is not None and existing is not None and existing.verdict.releases and not verdict.releases:
            _withdraw_release(rt, existing.vault_bucket, existing.vault_key, existing.vault_version_id)
        if verdict.releases and not rt.read_vault:
            tag_verdict(rt.s3, ref, verdict, scan_id)
        if rt.lifetime is not None and not rt.read_vault and ref.bucket == settings.buckets.ingest:
            # Only now: the vault/quarantine copy is written, verified and recorded (row + scan). Only
            # uploads to the drop zone go; a bulk job's source repository is the owner's to keep.
            outcome = rt.lifetime.after_verdict(
                ref,
                rt.artifacts.get(ref.artifact_id, ref.version_id or "null"),
                group.plaintext_retention_days,
            )
            logger.info("plaintext upload", extra={"outcome": outcome})
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


def _finish(rt: Runtime, ref: ArtifactRef, record: ScanRecord) -> None:
    """The steps after the record, for a version found recorded (a retry, a duplicate): the ingest tag,
    and for a verdict that does not release, the withdrawal of any release an earlier scan made."""
    tag_verdict(rt.s3, ref, record.verdict, record.scan_id)
    if record.verdict.releases:
        return
    for earlier in rt.scans.history(ref.artifact_id):
        if earlier.version_id == ref.version_id and earlier.verdict.releases and earlier.vault_uri:
            location, _, version_id = earlier.vault_uri.removeprefix("s3://").partition("?versionId=")
            bucket, _, key = location.partition("/")
            _withdraw_release(rt, bucket, key, version_id or None)


def _drop_unrecorded_copy(rt: Runtime, vault_key: str, scan_id: str) -> None:
    """An earlier try of this attempt that was killed after encrypting (before recording) left its
    ciphertext at `vault_key`: it is referenced by nothing, so it goes before the new copy is written."""
    try:
        head = rt.s3.head_object(Bucket=rt.settings.buckets.vault, Key=vault_key)
    except ClientError as exc:
        if is_not_found(exc):
            return
        raise
    if head.get("Metadata", {}).get("modelshield-scan-id") == scan_id and head.get("VersionId"):
        _delete_copy(rt, vault_key, head["VersionId"])


def _delete_copy(rt: Runtime, key: str, version_id: str | None) -> None:
    try:
        rt.s3.delete_object(
            Bucket=rt.settings.buckets.vault, Key=key, **({"VersionId": version_id} if version_id else {})
        )
        logger.warning("removed an unrecorded vault copy", extra={"vault_key": key})
    except ClientError as exc:
        logger.error("could not remove an unrecorded vault copy", extra={"vault_key": key, "error": str(exc)})


def _vault_uri(stored: Any, existing: ArtifactState | None) -> str | None:
    if stored is not None:
        return f"s3://{stored.bucket}/{stored.key}?versionId={stored.version_id}"
    if existing is not None and existing.vault_key:
        return f"s3://{existing.vault_bucket}/{existing.vault_key}?versionId={existing.vault_version_id}"
    return None


def _withdraw_release(rt: Runtime, bucket: str | None, key: str | None, version_id: str | None) -> None:
    """A released artifact became blocked: its quarantine copy is written, verified and recorded, and its
    ingest tag no longer releases it, so the consumer-facing vault version can go. Idempotent: a retry
    finds it gone. The ingest original stays."""
    if not bucket or not key or not version_id or key.startswith(rt.settings.quarantine_prefix):
        return
    try:
        rt.s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        return
    logger.warning("release withdrawn", extra={"vault_key": key})


def _summary(rules: list[RuleResult], verdict: Verdict, evaluation_message: str = "") -> str:
    failed = [r for r in rules if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]
    if not failed:
        return evaluation_message if evaluation_message == SIDECAR_MESSAGE else "all enabled rules passed"
    parts = [f"{r.rule.value} {r.status.value}{' (blocking)' if r.blocking else ''}" for r in failed]
    return f"{verdict.value}: " + ", ".join(parts)


def _next_state(
    ref: ArtifactRef,
    record: ScanRecord,
    download: Any,
    stored: Any,
    state: EncryptionState,
    existing: ArtifactState | None,
    metadata: Any = None,
) -> ArtifactState:
    """The version's state after `record`: a verdict-only move when the vault copy stands (`stored` None),
    else the new vault copy; the upload's metadata and tags (not ModelShield's) carry over for rescans."""
    if stored is None and existing is not None:  # verdict class unchanged: only the verdict and scan move on
        return existing.model_copy(
            update={"verdict": record.verdict, "latest_scan_ref": record.scan_ref, "group": record.group}
        )
    return ArtifactState(
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
        superseded_vault_copy=existing.superseded_vault_copy if existing else {},
        source_metadata=existing.source_metadata
        if existing
        else dict(metadata.user_metadata if metadata is not None else {}),
        source_tags=existing.source_tags
        if existing
        else {
            k: v
            for k, v in (metadata.tags if metadata is not None else {}).items()
            if not k.startswith("modelshield-")
        },
    )


def _commit(
    rt: Runtime,
    ref: ArtifactRef,
    record: ScanRecord,
    download: _Download,
    stored: Any,
    state: EncryptionState,
    existing: ArtifactState | None,
    metadata: Any = None,
) -> None:
    """Write the scan record and the version's new state in one transaction (store/records.py)."""
    new = _next_state(ref, record, download, stored, state, existing, metadata)
    record_scan(
        rt.scans.table.meta.client,
        scans_table=rt.settings.tables.scans,
        artifacts_table=rt.settings.tables.artifacts,
        record=rt.scans.sealed(record),
        state=new,
        expected_revision=existing.revision if existing else None,
    )


@dataclass
class Evaluated:
    """One downloaded object version scanned and judged under its security group (nothing written yet)."""

    group: SecurityGroup
    report: Any  # modelshield.models.ScanReport
    evaluation: Any  # the policy engine's evaluation: verdict, rules, group name and version
    metadata: Any = None  # the ArtifactMetadata it was judged with

    @property
    def verdict(self) -> Verdict:
        return self.evaluation.verdict  # type: ignore[no-any-return]


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
    new = _next_state(ref, record, download, stored, state, existing)
    rt.artifacts.save(new, expected_revision=existing.revision if existing else None)


def download_object(s3: Any, ref: ArtifactRef, workdir: Path) -> _Download:
    """Stream one object version to ephemeral storage, hashing it (bulk jobs share this with uploads; the
    caller deletes `path`)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=workfiles.PREFIX, dir=workdir)
    try:
        return _download(s3, ref, fd, Path(name))
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
