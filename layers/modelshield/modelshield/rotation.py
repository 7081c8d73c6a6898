"""The scheduled key-rotation run: re-wrap, re-key, retire expired grants, report rotation compliance.

What one run does, in order, and why it is safe to interrupt anywhere:
1. Report keys in use whose KMS automatic rotation is off (audited, once per run and key).
2. Retire the grants of approved access requests past their expiry (KMS grants have no expiry).
3. Walk the artifacts table from the checkpoint cursor. For each encrypted artifact version:
   * data key older than its group's `max_data_key_age_days` → **re-key**: decrypt and re-encrypt under a
     fresh data key and the group's current key (streamed through ephemeral storage);
   * else wrapped by a key that is not its group's current key → **re-wrap**: only the header changes
     (the data key re-encrypted under the new key, a new header tag). The frames are copied server-side
     with UploadPartCopy: part 1 is the new header plus the first `first_part_bytes` of the body (S3
     needs >= 5 MiB in every part but the last), the rest are byte ranges of the old object. Only the
     header and that first chunk are downloaded. Small objects are simply rewritten whole.
   Each new vault version is verified (exact size; header parses, its data key unwraps under the new key
   through KMS, key commitment and header tag check, the first frame authenticates) before the artifact
   record moves to it with a conditional write on `revision`. Only then is the old version deleted, so
   the old key stops protecting any copy; until then nothing is lost. A concurrent change to the record
   is merged when it did not touch the vault object, otherwise our new version is discarded.
   Consumers' key (`<key>`, not `quarantine/` or `versions/`) is written under the artifact's lease, the
   one the scan pipeline takes (store/leases.py), and only by the version that is current there: a new
   S3 version becomes the current one, so re-wrapping a superseded version in place would serve consumers
   the older model. A superseded version's rotated copy goes to `versions/<version>/<key>` instead, where
   the pipeline puts a released version that arrives after a newer one.
   The write that moves the record also names the old copy (`superseded_vault_copy`) and the write after
   its deletion clears it: a deletion that fails is retried by the next run (action `retire`).
Progress is checkpointed (the artifacts-table cursor) in the audit table; a run stops cleanly when the
Lambda's remaining time drops under a margin, and the next run resumes at the cursor. Every action
checks the record's current state first (already on the target key / fresh data key → nothing to do),
so repeating an item never repeats its work, and every action is audited with an idempotency key.
"""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from modelshield.access import AccessService
from modelshield.audit import AuditAction, AuditLog, Decision
from modelshield.crypto import checksums
from modelshield.crypto.envelope import EnvelopeError, Header
from modelshield.crypto.keyring import KmsKeyring, rewrap_header
from modelshield.crypto.multipart import MultipartUpload
from modelshield.crypto.s3 import (
    encrypt_to_s3,
    get_range,
    parse_envelope_head,
    read_object_head,
    verify_stored,
)
from modelshield.crypto.streams import Expectation, decrypt_to, open_message
from modelshield.errors import ConcurrentUpdate, IntegrityError, ModelShieldError, RotationConflict
from modelshield.keys import KeyResolver, key_status, keys_without_rotation
from modelshield.models import CTX_ARTIFACT, CTX_SHA256, CTX_VERSION, ArtifactState, EncryptionState, utcnow
from modelshield.release import META_WRAPPING_KEY
from modelshield.store.dynamo import from_item

MiB = 1 << 20
S3_MIN_PART = 5 * MiB  # every multipart part but the last
S3_MAX_PART = 5 * 1024 * MiB  # UploadPartCopy range limit
DEFAULT_MAX_AGE_DAYS = 365
CHECKPOINT_NAME = "rotation"
CHECKPOINT_EVERY = 25  # no-op items between checkpoint writes (actions always checkpoint)


class Action(StrEnum):
    REWRAP = "rewrap"
    REKEY = "rekey"
    RETIRE = "retire"  # delete a superseded vault copy an earlier run could not delete


AUDIT_ACTIONS = {
    Action.REWRAP: AuditAction.ROTATION_REWRAP,
    Action.REKEY: AuditAction.ROTATION_REKEY,
    Action.RETIRE: AuditAction.ROTATION_RETIRE,
}


QUARANTINE_PREFIX = "quarantine/"  # as ScanSettings.quarantine_prefix; never deleted (bucket policy)
VERSIONS_PREFIX = "versions/"  # released versions that are not the newest (pipeline._vault_key)


@dataclass(frozen=True)
class RotationSettings:
    default_key_id: str  # the stack's key for groups without their own
    first_part_bytes: int = S3_MIN_PART  # body bytes sent with the new header: part 1 must be >= 5 MiB
    copy_part_bytes: int = 1024 * MiB  # UploadPartCopy range size
    margin_ms: int = 60_000  # stop when less than this (plus the item's estimate) remains
    rekey_bytes_per_second: float = 40e6  # for the time estimate of a full re-encryption
    delete_old_versions: bool = True  # False keeps superseded versions (e.g. for a lifecycle rule)
    workdir: str = tempfile.gettempdir()
    principal: str = "modelshield-rotation"  # who the audit records name
    lease_wait_seconds: float = 60.0  # for the artifact's lease, while the pipeline writes a version

    def __post_init__(self) -> None:
        if self.first_part_bytes < S3_MIN_PART:
            raise ValueError(f"first_part_bytes must be at least {S3_MIN_PART}")
        if not S3_MIN_PART <= self.copy_part_bytes <= S3_MAX_PART:
            raise ValueError(f"copy_part_bytes must be between {S3_MIN_PART} and {S3_MAX_PART}")


class ItemResult(BaseModel):
    artifact_id: str
    version_id: str
    action: Action
    from_key: str | None
    to_key: str
    done: bool = False  # False in a dry run
    old_vault_version: str | None = None
    new_vault_version: str | None = None
    new_vault_key: str | None = None  # set when the rotated copy moved (a superseded version → versions/)
    bytes_downloaded: int = 0
    bytes_uploaded: int = 0
    bytes_copied: int = 0  # server-side (UploadPartCopy)
    note: str = ""
    retire_error: str = ""  # the old copy could not be deleted (the next run's `retire` does it)


class RotationReport(BaseModel):
    run_id: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    complete: bool = False  # False: stopped for time; the next run resumes at the checkpoint
    resumed: bool = False
    examined: int = 0
    keys_without_rotation: list[str] = Field(default_factory=list)
    retired_grants: list[str] = Field(default_factory=list)  # request ids
    actions: list[ItemResult] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)
    deferred: list[dict[str, str]] = Field(default_factory=list)  # too large for one run's budget

    def counts(self) -> dict[str, int]:
        done = [a for a in self.actions if a.done or self.dry_run]
        return {
            "examined": self.examined,
            "rewrap": sum(a.action == Action.REWRAP for a in done),
            "rekey": sum(a.action == Action.REKEY for a in done),
            "retired_grants": len(self.retired_grants),
            "failures": len(self.failures),
        }


@dataclass
class _Plan:
    artifact: ArtifactState
    action: Action
    target_key: str


class Rotator:
    """One rotation run's collaborators. `run()` is the whole job; the CLI and the Lambda both call it."""

    def __init__(
        self,
        *,
        s3: Any,
        kms: Any,
        artifacts: Any,  # modelshield.store.artifacts.ArtifactStore (get/save/table)
        groups: Callable[[], Sequence[Any]],  # SecurityGroup-like: name, kms_key_id, max_data_key_age_days
        audit: AuditLog,
        settings: RotationSettings,
        access: AccessService | None = None,
        checkpoints: Any | None = None,  # modelshield.store.audit.DynamoCheckpointStore
        clock: Callable[[], datetime] = utcnow,
        leases: Any | None = None,  # modelshield.store.leases.LeaseStore: the pipeline's artifact leases
    ) -> None:
        self.s3 = s3
        self.kms = kms
        self.artifacts = artifacts
        self.groups = groups
        self.audit = audit
        self.settings = settings
        self.access = access
        self.checkpoints = checkpoints
        self.clock = clock
        self.leases = leases
        self.keyring = KmsKeyring(kms)
        self.resolver = KeyResolver(kms)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, *, dry_run: bool = False, remaining_ms: Callable[[], int] | None = None) -> RotationReport:
        state, revision = self._load_checkpoint(dry_run)
        resumed = bool(state.get("cursor"))
        report = RotationReport(
            run_id=state.get("run_id") or uuid.uuid4().hex[:16],
            dry_run=dry_run,
            started_at=self.clock(),
            resumed=resumed,
        )
        groups = {g.name: g for g in self.groups()}
        if not resumed:  # keys and grants once per run, not once per resumed invocation
            self._report_keys(report, list(groups.values()), dry_run)
            self._retire_grants(report, dry_run)
        cursor: dict[str, str] | None = state.get("cursor")
        # Time left when this invocation started: an item that needs more than that can never fit.
        start_left = remaining_ms() if remaining_ms is not None else None
        since_checkpoint = 0
        for artifact in self._scan(cursor):
            try:
                plan = self._plan(artifact, groups)
            except ClientError as exc:  # e.g. the group names a key alias that does not exist
                report.failures.append(
                    {
                        "artifact_id": artifact.artifact_id,
                        "version_id": artifact.version_id,
                        "error": str(exc),
                    }
                )
                plan = None
            budget_ms = self.settings.margin_ms + (self._estimate_ms(plan) if plan else 0)
            if remaining_ms is not None and start_left is not None and remaining_ms() < budget_ms:
                if plan is None or budget_ms <= start_left:
                    return self._stop(report, cursor, revision, dry_run)  # fits in a fresh run: resume then
                report.deferred.append(
                    {
                        "artifact_id": artifact.artifact_id,
                        "version_id": artifact.version_id,
                        "reason": f"{plan.action.value} needs about {budget_ms // 1000} s, "
                        "more than one run has",
                    }
                )
                plan = None
            report.examined += 1
            if plan is not None:
                self._execute(plan, report, dry_run)
            cursor = {"artifact_id": artifact.artifact_id, "version_id": artifact.version_id}
            since_checkpoint += 1
            if not dry_run and (plan is not None or since_checkpoint >= CHECKPOINT_EVERY):
                revision = self._save_checkpoint(report.run_id, cursor, revision)
                since_checkpoint = 0
        report.complete = True
        report.finished_at = self.clock()
        if not dry_run and self.checkpoints is not None:
            self._save_checkpoint(report.run_id, None, revision, done=True)
        self._audit_run(report)
        return report

    # -- phases ------------------------------------------------------------------------------------
    def _report_keys(self, report: RotationReport, groups: list[Any], dry_run: bool) -> None:
        statuses = key_status(
            kms=self.kms,
            groups=groups,
            default_key_id=self.settings.default_key_id,
            artifacts=[],  # rotation compliance only; counts are the `keys status` command's job
            resolver=self.resolver,
        )
        for status in keys_without_rotation(statuses):
            report.keys_without_rotation.append(status.key_arn)
            if not dry_run:
                self.audit.append(
                    AuditAction.KEY_ROTATION_DISABLED,
                    principal=self.settings.principal,
                    decision=Decision.INFO,
                    reason=status.error or "automatic key rotation is off",
                    detail={"key_arn": status.key_arn, "groups": status.groups},
                    idempotency_key=f"rotation:{report.run_id}:keyrot:{status.key_arn}",
                )

    def _retire_grants(self, report: RotationReport, dry_run: bool) -> None:
        if self.access is None:
            return
        retired = self.access.retire_expired(principal=self.settings.principal, dry_run=dry_run)
        report.retired_grants.extend(r.request_id for r in retired)

    def rotate_artifact(
        self,
        artifact: ArtifactState,
        *,
        max_data_key_age_days: int | None = None,
        dry_run: bool = False,
        run_id: str = "job",
    ) -> ItemResult | None:
        """Re-wrap or re-key one artifact now, exactly as a run would (bulk `rekey` jobs call this).

        `max_data_key_age_days` replaces the group's maximum data-key age. None: already current.
        Raises ModelShieldError when the action failed (it is audited either way).
        """
        groups = {g.name: g for g in self.groups()}
        plan = self._plan(artifact, groups, max_age_days=max_data_key_age_days)
        if plan is None:
            return None
        report = RotationReport(run_id=run_id, dry_run=dry_run, started_at=self.clock())
        self._execute(plan, report, dry_run)
        if report.failures:
            raise ModelShieldError(report.failures[0]["error"])
        return report.actions[0]

    def _plan(
        self, artifact: ArtifactState, groups: dict[str, Any], *, max_age_days: int | None = None
    ) -> _Plan | None:
        if artifact.encryption_state not in (EncryptionState.ENCRYPTED, EncryptionState.QUARANTINED):
            return None
        if not (artifact.vault_bucket and artifact.vault_key and artifact.wrapping_key_arn):
            return None
        if artifact.superseded_vault_copy:  # finish what an earlier run started
            return _Plan(artifact, Action.RETIRE, artifact.wrapping_key_arn)
        group = groups.get(artifact.group)
        key_id = (getattr(group, "kms_key_id", None) if group else None) or self.settings.default_key_id
        max_age = (
            getattr(group, "max_data_key_age_days", DEFAULT_MAX_AGE_DAYS) if group else DEFAULT_MAX_AGE_DAYS
        )
        if max_age_days is not None:
            max_age = max_age_days
        target = self.resolver.arn(key_id)
        created = artifact.data_key_created_at
        if created is None or self.clock() - created > timedelta(days=max_age):
            return _Plan(artifact, Action.REKEY, target)
        if artifact.wrapping_key_arn != target:
            return _Plan(artifact, Action.REWRAP, target)
        return None

    def _estimate_ms(self, plan: _Plan) -> int:
        size = plan.artifact.ciphertext_size or plan.artifact.size
        if plan.action == Action.RETIRE:
            return 2_000
        if plan.action == Action.REKEY:
            return int(2 * size / self.settings.rekey_bytes_per_second * 1000)
        parts = 1 + max(0, size - self.settings.first_part_bytes) // self.settings.copy_part_bytes
        return 5_000 + 2_000 * parts

    def _execute(self, plan: _Plan, report: RotationReport, dry_run: bool) -> None:
        artifact = plan.artifact
        result = ItemResult(
            artifact_id=artifact.artifact_id,
            version_id=artifact.version_id,
            action=plan.action,
            from_key=artifact.wrapping_key_arn,
            to_key=plan.target_key,
            old_vault_version=artifact.vault_version_id,
        )
        if dry_run:
            result.note = "dry run: nothing changed"
            report.actions.append(result)
            return
        try:
            with self._lease(artifact, plan.action):
                if plan.action == Action.RETIRE:
                    updated = self._retire_superseded(artifact, result)
                elif plan.action == Action.REWRAP:
                    updated = self._rewrap(artifact, plan.target_key, result)
                else:
                    updated = self._rekey(artifact, plan.target_key, result)
        except (ModelShieldError, ClientError, OSError) as exc:
            report.failures.append(
                {
                    "artifact_id": artifact.artifact_id,
                    "version_id": artifact.version_id,
                    "error": str(exc)[:500],
                }
            )
            self.audit.append(
                AUDIT_ACTIONS[plan.action],
                principal=self.settings.principal,
                decision=Decision.ERROR,
                artifact_id=artifact.artifact_id,
                version_id=artifact.version_id,
                reason=str(exc)[:500],
                detail={
                    "run_id": report.run_id,
                    "from_key": artifact.wrapping_key_arn,
                    "to_key": plan.target_key,
                },
            )
            return
        result.done = True
        report.actions.append(result)
        if result.retire_error:  # the new copy is in place; the old one waits for the next run
            report.failures.append(
                {
                    "artifact_id": artifact.artifact_id,
                    "version_id": artifact.version_id,
                    "error": result.retire_error,
                }
            )
        self.audit.append(
            AUDIT_ACTIONS[plan.action],
            principal=self.settings.principal,
            decision=Decision.ALLOWED,
            artifact_id=artifact.artifact_id,
            version_id=artifact.version_id,
            detail={
                "run_id": report.run_id,
                **result.model_dump(mode="json", exclude={"artifact_id", "version_id"}),
            },
            idempotency_key=f"rotation:{plan.action.value}:{artifact.artifact_id}:{artifact.version_id}:"
            f"{result.new_vault_version}",
        )
        if self.access is not None and updated.wrapping_key_arn != artifact.wrapping_key_arn:
            self.access.migrate_grants(
                updated, new_key_arn=plan.target_key, principal=self.settings.principal
            )

    # -- re-wrap -----------------------------------------------------------------------------------
    def _rewrap(self, artifact: ArtifactState, target_key: str, result: ItemResult) -> ArtifactState:
        bucket, key, old_version = _vault(artifact)
        dest = self._destination(artifact, result)
        head = self.s3.head_object(Bucket=bucket, Key=key, VersionId=old_version, ChecksumMode="ENABLED")
        size = int(head["ContentLength"])
        head_bytes = self._read_head(bucket, key, old_version, size, self.settings.first_part_bytes, result)
        context = _check_context(parse_envelope_head(head_bytes)[0], artifact)
        # Unwrap only with the key the record names: a header pointing elsewhere is not ours to trust.
        keyring = KmsKeyring(self.kms, allowed_key_arns=[str(artifact.wrapping_key_arn)])
        rewrapped = rewrap_header(
            head_bytes, keyring=keyring, new_key_id=target_key, expected_context=context
        )
        old_hlen = rewrapped.old_length
        body_len = size - old_hlen
        expected_size = rewrapped.new_length + body_len
        extra = {
            "Metadata": _rotated_metadata(head.get("Metadata", {}), target_key),
            "ContentType": head.get("ContentType", "application/octet-stream"),
        }
        if body_len <= self.settings.first_part_bytes + S3_MIN_PART:
            # Small: rewrite the whole object (it is at most a few MiB).
            rest = (
                self._get_range(bucket, key, old_version, len(head_bytes), size, result)
                if len(head_bytes) < size
                else b""
            )
            body = rewrapped.header + head_bytes[old_hlen:] + rest
            checksum = checksums.of(body)
            put = self.s3.put_object(
                Bucket=bucket,
                Key=dest,
                Body=body,
                ChecksumAlgorithm=checksums.ALGORITHM,
                ChecksumCRC64NVME=checksum,
                **extra,
            )
            result.bytes_uploaded += len(body)
            new_version = put.get("VersionId")
        else:
            first = head_bytes[old_hlen : old_hlen + self.settings.first_part_bytes]
            copy_from = old_hlen + len(first)
            tail = self._tail_checksum(head, head_bytes[:copy_from], bucket, key, old_version, result)
            checksum = checksums.encode(
                checksums.combine(checksums.crc(rewrapped.header + first), tail, size - copy_from)
            )
            new_version = self._multipart_rewrap(
                bucket,
                (key, dest),
                old_version,
                rewrapped.header + first,
                copy_from,
                size,
                extra,
                checksum,
                result,
            )
        if not new_version:
            raise IntegrityError(
                f"s3://{bucket}/{key}: the vault bucket must be versioned (no version id returned)"
            )
        result.new_vault_version = new_version
        try:
            self._verify(
                bucket,
                dest,
                new_version,
                (expected_size, checksum),
                rewrapped.message_id,
                target_key,
                context,
                result,
            )
            updated = self._commit(
                artifact,
                {
                    "vault_key": dest,
                    "vault_version_id": new_version,
                    "wrapping_key_arn": target_key,
                    "ciphertext_size": expected_size,
                    "superseded_vault_copy": self._superseded(key, old_version, result),
                },
            )
        except (ModelShieldError, ClientError, EnvelopeError):
            self._discard(bucket, dest, new_version)
            raise
        return self._retire_old(updated, result)

    def _multipart_rewrap(
        self,
        bucket: str,
        keys: tuple[str, str],  # (the old version's key, the new version's key)
        old_version: str,
        first_part: bytes,
        copy_from: int,
        size: int,
        extra: dict[str, Any],
        checksum: str,
        result: ItemResult,
    ) -> str | None:
        # S3 checks the assembled object against `checksum`, the full-object CRC64NVME of the new header
        # and first bytes followed by the old version's copied bytes.
        key, dest = keys
        with MultipartUpload(self.s3, bucket, dest, extra=extra) as upload:
            upload.send(1, first_part)
            result.bytes_uploaded += len(first_part)
            start, number = copy_from, 2
            source = {"Bucket": bucket, "Key": key, "VersionId": old_version}
            while start < size:
                end = min(size, start + self.settings.copy_part_bytes)
                if size - end < S3_MIN_PART:  # never leave a too-small part that is not the last
                    end = size
                upload.copy(number, source, start, end)
                result.bytes_copied += end - start
                start, number = end, number + 1
            return upload.complete(checksum).get("VersionId")

    def _tail_checksum(
        self,
        head: Mapping[str, Any],
        prefix: bytes,
        bucket: str,
        key: str,
        version: str,
        result: ItemResult,
    ) -> int:
        """CRC64NVME of the old version's bytes after `prefix`: from the full-object checksum S3 holds
        for it when there is one (no download), else by streaming those bytes once (objects stored
        before ModelShield wrote full-object checksums)."""
        size = int(head["ContentLength"])
        stored = head.get(checksums.FIELD)
        if stored and head.get("ChecksumType", checksums.TYPE) == checksums.TYPE:
            return checksums.suffix(checksums.decode(stored), checksums.crc(prefix), size - len(prefix))
        value = 0
        body = self.s3.get_object(
            Bucket=bucket, Key=key, VersionId=version, Range=f"bytes={len(prefix)}-{size - 1}"
        )["Body"]
        try:
            for chunk in body.iter_chunks(1 << 20):
                value = checksums.crc(chunk, value)
                result.bytes_downloaded += len(chunk)
        finally:
            body.close()
        return value

    def _verify(
        self,
        bucket: str,
        key: str,
        version: str,
        expected: tuple[int, str],
        message_id: str,
        target_key: str,
        context: dict[str, str],
        result: ItemResult,
    ) -> None:
        """HeadObject must report the (size, full-object checksum) we expect (`verify_stored`, as for
        every other vault write); then read back the new version's header and first frame, and check
        them through KMS and AES-GCM."""
        expected_size, checksum = expected
        verify_stored(self.s3, bucket, key, version, expected_size, checksum)
        data = self._read_head(bucket, key, version, expected_size, 0, result)
        header, hlen = parse_envelope_head(data)
        first_frame = min(expected_size - hlen, header.frame_length + 64)  # one frame with its framing
        if len(data) < hlen + first_frame:
            data += self._get_range(bucket, key, version, len(data), hlen + first_frame, result)
        if header.message_id.hex() != message_id:
            raise IntegrityError("the re-wrapped object has another message id")
        if [edk.key_arn for edk in header.encrypted_data_keys] != [target_key]:
            raise IntegrityError("the re-wrapped object's data key is not wrapped by the target key only")
        strict = KmsKeyring(self.kms, allowed_key_arns=[target_key])
        _, reader, _ = open_message(
            io.BytesIO(data), expect=Expectation(strict, context, allow_extra_context=False)
        )
        reader.read_into(memoryview(bytearray(header.frame_length)))  # authenticates the first frame

    # -- re-key ------------------------------------------------------------------------------------
    def _rekey(self, artifact: ArtifactState, target_key: str, result: ItemResult) -> ArtifactState:
        bucket, key, old_version = _vault(artifact)
        dest = self._destination(artifact, result)
        head = self.s3.head_object(Bucket=bucket, Key=key, VersionId=old_version)
        header_bytes = self._read_head(bucket, key, old_version, int(head["ContentLength"]), 0, result)
        old_header, _ = parse_envelope_head(header_bytes)
        context = _check_context(old_header, artifact)
        workdir = Path(self.settings.workdir)
        with tempfile.TemporaryDirectory(dir=workdir, prefix="modelshield-rekey-") as tmp:
            plain = Path(tmp) / "plaintext"
            body = self.s3.get_object(Bucket=bucket, Key=key, VersionId=old_version)["Body"]
            try:
                decrypted = decrypt_to(
                    body,
                    plain,
                    expected_sha256=artifact.sha256,
                    expect=Expectation(
                        KmsKeyring(self.kms, allowed_key_arns=[str(artifact.wrapping_key_arn)]),
                        context,
                        allow_extra_context=False,
                    ),
                )
            finally:
                body.close()
            result.bytes_downloaded += int(head["ContentLength"])
            stored = encrypt_to_s3(
                plain,
                s3=self.s3,
                keyring=self.keyring,
                key_id=target_key,
                bucket=bucket,
                key=dest,
                context=context,
                frame_length=old_header.frame_length,
                metadata=_rotated_metadata(head.get("Metadata", {}), target_key),
            )
        result.bytes_uploaded += stored.size
        if not stored.version_id:
            raise IntegrityError(
                f"s3://{bucket}/{key}: the vault bucket must be versioned (no version id returned)"
            )
        result.new_vault_version = stored.version_id
        result.note = f"fresh data key; plaintext sha256 {decrypted.plaintext_sha256} re-verified"
        try:
            updated = self._commit(
                artifact,
                {
                    "vault_key": dest,
                    "vault_version_id": stored.version_id,
                    "wrapping_key_arn": stored.key_arn,
                    "ciphertext_size": stored.size,
                    "data_key_created_at": self.clock(),
                    "superseded_vault_copy": self._superseded(key, old_version, result),
                },
            )
        except (ModelShieldError, ClientError):
            self._discard(bucket, dest, stored.version_id)
            raise
        return self._retire_old(updated, result)

    # -- shared steps ------------------------------------------------------------------------------
    def _commit(self, artifact: ArtifactState, update: dict[str, Any]) -> ArtifactState:
        """Move the record to the new vault version without losing a concurrent change."""
        try:
            return self.artifacts.save(
                artifact.model_copy(update=update), expected_revision=artifact.revision
            )
        except ConcurrentUpdate:
            current = self.artifacts.get(artifact.artifact_id, artifact.version_id)
            same_object = current is not None and (
                current.vault_bucket,
                current.vault_key,
                current.vault_version_id,
                current.wrapping_key_arn,
            ) == (
                artifact.vault_bucket,
                artifact.vault_key,
                artifact.vault_version_id,
                artifact.wrapping_key_arn,
            )
            if not same_object or current is None:
                raise RotationConflict(
                    f"{artifact.artifact_id} ({artifact.version_id}): "
                    "the vault object changed during rotation"
                ) from None
            # Someone changed other fields (a rescan's verdict, say): keep theirs, apply ours on top.
            return self.artifacts.save(current.model_copy(update=update), expected_revision=current.revision)

    # -- consumers' key and superseded copies ---------------------------------------------------------
    def _lease(self, artifact: ArtifactState, action: Action) -> AbstractContextManager[None]:
        """The artifact's lease while a rotated copy may land at consumers' key (see the module docstring)."""
        key = artifact.vault_key or ""
        if (
            self.leases is None
            or action == Action.RETIRE
            or key.startswith((QUARANTINE_PREFIX, VERSIONS_PREFIX))
        ):
            return nullcontext()
        return self.leases.hold(artifact.artifact_id, wait_seconds=self.settings.lease_wait_seconds)  # type: ignore[no-any-return]

    def _destination(self, artifact: ArtifactState, result: ItemResult) -> str:
        """Where the rotated copy goes: its own key, unless that is consumers' key and another version is
        current there (a new version would become current): then `versions/<version>/<key>`."""
        bucket, key, version = _vault(artifact)
        if key.startswith((QUARANTINE_PREFIX, VERSIONS_PREFIX)):
            return key
        try:
            current = self.s3.head_object(Bucket=bucket, Key=key).get("VersionId")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            current = None  # a delete marker: nothing of ours is served there
        if current == version:
            return key
        dest = f"{VERSIONS_PREFIX}{artifact.version_id}/{key}"
        result.new_vault_key = dest
        return dest

    def _superseded(self, key: str, old_version: str, result: ItemResult) -> dict[str, str]:
        """The old copy to delete once the record names the new one ({} when it is kept)."""
        if key.startswith(QUARANTINE_PREFIX):
            # The vault's bucket policy keeps every quarantine/ version (QuarantineVersionsAreKept: it is the
            # evidence of what was blocked), so the superseded copy stays, noncurrent and still encrypted.
            result.note = (result.note + "; " if result.note else "") + f"old version {old_version} kept"
            return {}
        if not self.settings.delete_old_versions:
            return {}
        return {"key": key, "version_id": old_version}

    def _retire_old(self, updated: ArtifactState, result: ItemResult) -> ArtifactState:
        """Delete the superseded copy now; if S3 refuses, the record keeps naming it for the next run."""
        old = updated.superseded_vault_copy
        if not old:
            return updated
        try:
            return self._retire_superseded(updated, result)
        except (ClientError, ModelShieldError) as exc:
            result.retire_error = (
                f"old version {old['version_id']} of s3://{updated.vault_bucket}/{old['key']} not deleted "
                f"({str(exc)[:200]}); the next run deletes it"
            )
            return updated

    def _retire_superseded(self, artifact: ArtifactState, result: ItemResult) -> ArtifactState:
        old = artifact.superseded_vault_copy
        self.s3.delete_object(Bucket=artifact.vault_bucket, Key=old["key"], VersionId=old["version_id"])
        result.note = (result.note + "; " if result.note else "") + f"old version {old['version_id']} deleted"
        return self._commit(artifact, {"superseded_vault_copy": {}})

    def _discard(self, bucket: str, key: str, version: str | None) -> None:
        if version:
            try:
                self.s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            except ClientError:
                pass  # best effort: an unreferenced version is harmless and visible in the bucket

    def _read_head(
        self, bucket: str, key: str, version: str, size: int, body_bytes: int, result: ItemResult
    ) -> bytes:
        def count(n: int) -> None:
            result.bytes_downloaded += n

        return read_object_head(
            self.s3, bucket, key, version, size=size, body_bytes=body_bytes, on_bytes=count
        )

    def _get_range(
        self, bucket: str, key: str, version: str, start: int, end: int, result: ItemResult
    ) -> bytes:
        data = get_range(self.s3, bucket, key, version, start, end)
        result.bytes_downloaded += len(data)
        return data

    # -- checkpoint and run record -----------------------------------------------------------------
    def _scan(self, cursor: dict[str, str] | None) -> Iterator[ArtifactState]:
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        if cursor:
            kwargs["ExclusiveStartKey"] = dict(cursor)
        while True:
            page = self.artifacts.table.scan(**kwargs)
            for item in page.get("Items", []):
                yield ArtifactState.model_validate(from_item(item))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _load_checkpoint(self, dry_run: bool) -> tuple[dict[str, Any], int | None]:
        if self.checkpoints is None:
            return {}, None
        stored = self.checkpoints.get(CHECKPOINT_NAME)
        if stored is None:
            return {}, None
        state, revision = stored
        if state.get("done") or dry_run:
            return {}, revision  # the last run finished (or this is a dry run): start from the beginning
        return state, revision

    def _save_checkpoint(
        self, run_id: str, cursor: dict[str, str] | None, revision: int | None, *, done: bool = False
    ) -> int | None:
        if self.checkpoints is None:
            return revision
        state = {"run_id": run_id, "cursor": cursor, "done": done, "saved_at": self.clock().isoformat()}
        return int(self.checkpoints.put(CHECKPOINT_NAME, state, expected_revision=revision))

    def _stop(
        self, report: RotationReport, cursor: dict[str, str] | None, revision: int | None, dry_run: bool
    ) -> RotationReport:
        if not dry_run:
            self._save_checkpoint(report.run_id, cursor, revision)
        report.finished_at = self.clock()
        self._audit_run(report)
        return report

    def _audit_run(self, report: RotationReport) -> None:
        if report.dry_run:
            return
        self.audit.append(
            AuditAction.ROTATION_RUN,
            principal=self.settings.principal,
            decision=Decision.ERROR if report.failures else Decision.INFO,
            reason="complete" if report.complete else "stopped before the time limit; will resume",
            detail={
                "run_id": report.run_id,
                "resumed": report.resumed,
                **report.counts(),
                "keys_without_rotation": report.keys_without_rotation,
            },
        )


def _vault(artifact: ArtifactState) -> tuple[str, str, str]:
    if not artifact.vault_version_id:
        raise IntegrityError(
            f"{artifact.artifact_id}: no vault version id recorded (is the vault bucket versioned?)"
        )
    return str(artifact.vault_bucket), str(artifact.vault_key), artifact.vault_version_id


def _check_context(header: Header, artifact: ArtifactState) -> dict[str, str]:
    """The vault object must be the one the record describes: never rotate a swapped object."""
    context = dict(header.context)
    expected = {CTX_ARTIFACT: artifact.artifact_id, CTX_VERSION: artifact.version_id}
    if artifact.sha256:
        expected[CTX_SHA256] = artifact.sha256
    wrong = [k for k, v in expected.items() if context.get(k) != v]
    if wrong:
        raise IntegrityError(
            f"{artifact.artifact_id}: the vault object's encryption context does not match "
            f"the record ({', '.join(wrong)})"
        )
    return context


def _rotated_metadata(metadata: dict[str, str], key_arn: str) -> dict[str, str]:
    """The object's S3 metadata for its new version: the same, naming the key that now wraps it."""
    updated = dict(metadata)
    if META_WRAPPING_KEY in updated:
        updated[META_WRAPPING_KEY] = key_arn
    return updated
