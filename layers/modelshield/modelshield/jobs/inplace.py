"""Encrypt in place and verify: the repository's own object becomes its envelope ciphertext.

Order of writes for one plaintext object version P of `bucket/key` (the bucket must be versioned):
1. download P to ephemeral storage while hashing it; scan and evaluate it under its group (pipeline code);
2. released: write the ciphertext C as a new version of the same key, with the encrypted state, plaintext
   sha256, wrapping key, job id and scan id in its metadata and a SHA-256 checksum S3 verifies on upload;
   blocked: write C under the vault's quarantine prefix instead;
3. verify C as stored: the whole message is decrypted to nowhere, every frame authenticated, the
   plaintext sha256 compared with the encryption context and with step 1;
4. append the scan record and the artifact record (vault location = C), so access requests work;
5. only now delete P and every older plaintext version of the key.
Killed anywhere: before 4 the plaintext is intact and an unrecorded C is discarded when the item runs
again; after 4 C is verified and recorded, and the rerun only finishes step 5.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import (
    ENVELOPE_MAGIC,
    S3Location,
    StoredCiphertext,
    encrypt_to_s3,
    open_object,
    read_object_head,
)
from modelshield.crypto.streams import Expectation, decrypt_stream
from modelshield.errors import IntegrityError
from modelshield.models import (
    CTX_ARTIFACT,
    CTX_SHA256,
    CTX_VERSION,
    ArtifactRef,
    EncryptionState,
    encryption_context,
)
from modelshield.pipeline import (
    Evaluated,
    Runtime,
    build_scan_record,
    download_object,
    evaluate_download,
    save_artifact_state,
)
from modelshield.release import META_SCAN_ID, META_STATE, META_VERDICT, META_WRAPPING_KEY

# S3 user metadata (x-amz-meta-*) on every object a job encrypted; the names shared with vault objects
# come from release.py, so rotation keeps both up to date.
STATE_META = META_STATE
SHA256_META = "modelshield-sha256"
KEY_META = META_WRAPPING_KEY
JOB_META = "modelshield-job-id"
SCAN_META = META_SCAN_ID
VERDICT_META = META_VERDICT
REPOSITORY_QUARANTINE = (
    "repositories/"  # under the vault's quarantine prefix: quarantine/repositories/<bucket>/<key>
)


class _Sink:
    """Where verification writes the plaintext it authenticates: nowhere."""

    def write(self, data: Any) -> int:
        return len(data)


@dataclass(frozen=True)
class Current:
    """The current version of a repository key, as HEAD and its first bytes show it."""

    version_id: str | None
    size: int
    metadata: dict[str, str]
    envelope: bool  # starts with our message format's magic bytes

    @property
    def ours(self) -> bool:
        return self.envelope and self.metadata.get(STATE_META) == EncryptionState.ENCRYPTED.value


def current_version(s3: Any, bucket: str, key: str, head: dict[str, Any]) -> Current:
    size = int(head.get("ContentLength") or 0)
    envelope = False
    if size >= len(ENVELOPE_MAGIC):
        body = open_object(
            s3, S3Location(bucket, key, head.get("VersionId")), Range=f"bytes=0-{len(ENVELOPE_MAGIC) - 1}"
        )
        try:
            envelope = body.read(len(ENVELOPE_MAGIC)) == ENVELOPE_MAGIC
        finally:
            body.close()
    return Current(
        version_id=_version(head.get("VersionId")),
        size=size,
        metadata={k.lower(): v for k, v in (head.get("Metadata") or {}).items()},
        envelope=envelope,
    )


def verify_object(
    rt: Runtime, bucket: str, key: str, version_id: str | None, expected_sha256: str | None
) -> dict[str, str]:
    """Authenticate every frame of a stored message and check its plaintext sha256; returns its context."""
    head = read_object_head(rt.s3, bucket, key, version_id)
    header, _ = parse_header(io.BytesIO(head))
    context = dict(header.context)
    if context.get(CTX_ARTIFACT) not in (f"{bucket}/{key}", None) and not key.startswith(
        rt.settings.quarantine_prefix
    ):
        raise IntegrityError(
            f"s3://{bucket}/{key}: the ciphertext says it is {context.get(CTX_ARTIFACT)}, not this object"
        )
    if expected_sha256 and context.get(CTX_SHA256) != expected_sha256:
        raise IntegrityError(
            f"s3://{bucket}/{key}: the encryption context's sha256 {context.get(CTX_SHA256)} is not "
            f"the recorded {expected_sha256}"
        )
    body = open_object(rt.s3, S3Location(bucket, key, version_id))
    try:
        expect = Expectation(keyring=KmsKeyring(rt.kms), context=context, allow_extra_context=False)
        result = decrypt_stream(body, _Sink(), expect=expect)
    finally:
        body.close()
    if result.plaintext_sha256 != context.get(CTX_SHA256):
        raise IntegrityError(
            f"s3://{bucket}/{key}: the plaintext's sha256 {result.plaintext_sha256} differs from the "
            f"{context.get(CTX_SHA256)} its encryption context promises"
        )
    return context


@dataclass
class Encrypted:
    evaluated: Evaluated
    stored: StoredCiphertext
    scan_id: str
    state: EncryptionState
    sha256: str
    size: int
    removed_versions: list[str]


def evaluate_only(rt: Runtime, ref: ArtifactRef, workdir: Path) -> tuple[Evaluated, str, int]:
    """Scan and judge one version without writing anything (scan jobs record it; dry runs do not)."""
    download = download_object(rt.s3, ref, workdir)
    try:
        return evaluate_download(rt, ref, download), download.sha256, download.size
    finally:
        download.path.unlink(missing_ok=True)


def scan_and_record(rt: Runtime, ref: ArtifactRef, workdir: Path) -> tuple[Evaluated, Any]:
    """A `scan` job's item: the verdict recorded as an append-only scan (trigger "job"), nothing else."""
    download = download_object(rt.s3, ref, workdir)
    try:
        evaluated = evaluate_download(rt, ref, download)
        record = build_scan_record(
            ref,
            download,
            evaluated,
            scan_id=uuid.uuid4().hex,
            state=EncryptionState.PLAINTEXT,
            vault_uri=None,
            trigger="job",
        )
        rt.scans.append(record)
        return evaluated, record
    finally:
        download.path.unlink(missing_ok=True)


def encrypt_in_place(rt: Runtime, ref: ArtifactRef, workdir: Path, *, job_id: str, key_arn: Any) -> Encrypted:
    """Steps 1-5 of the module docstring for one plaintext version `ref` (the key's current one)."""
    versioning = rt.s3.get_bucket_versioning(Bucket=ref.bucket).get("Status")
    if versioning != "Enabled":  # a write to the key would replace the only copy before it is verified
        raise IntegrityError(
            f"{ref.uri}: the repository bucket is not versioned, so encrypting in place would overwrite the "
            "only plaintext copy before its ciphertext is verified; enable versioning on the bucket "
            "(nothing was changed)"
        )
    download = download_object(rt.s3, ref, workdir)
    try:
        evaluated = evaluate_download(rt, ref, download)
        scan_id = uuid.uuid4().hex
        group = evaluated.group
        key_id = group.kms_key_id or rt.settings.kms_key_id
        context = encryption_context(ref, sha256=download.sha256, group=group.name)
        released = evaluated.verdict.releases
        target_bucket = ref.bucket if released else rt.settings.buckets.vault
        target_key = (
            ref.key
            if released
            else f"{rt.settings.quarantine_prefix}{REPOSITORY_QUARANTINE}{ref.bucket}/{ref.key}"
        )
        metadata = {
            STATE_META: (EncryptionState.ENCRYPTED if released else EncryptionState.QUARANTINED).value,
            SHA256_META: download.sha256,
            KEY_META: str(key_arn(key_id)),
            JOB_META: job_id,
            SCAN_META: scan_id,
            VERDICT_META: evaluated.verdict.value,
        }
        stored = encrypt_to_s3(
            download.path,
            s3=rt.s3,
            keyring=KmsKeyring(rt.kms),
            key_id=key_id,
            bucket=target_bucket,
            key=target_key,
            context=context,
            frame_length=rt.settings.frame_length,
            metadata=metadata,
            plaintext_sha256=download.sha256,
        )
        if released and (not stored.version_id or stored.version_id == ref.version_id):
            raise IntegrityError(
                f"{ref.uri}: S3 did not create a new version; enable versioning on the repository bucket "
                "(the plaintext is kept)"
            )
        try:
            verify_object(rt, stored.bucket, stored.key, stored.version_id, download.sha256)
        except BaseException:
            _delete(rt.s3, stored.bucket, stored.key, stored.version_id)  # never keep an unverified copy
            raise
        state = EncryptionState.ENCRYPTED if released else EncryptionState.QUARANTINED
        record = build_scan_record(
            ref,
            download,
            evaluated,
            scan_id=scan_id,
            state=state,
            vault_uri=S3Location(stored.bucket, stored.key, stored.version_id).uri,
            trigger="job",
        )
        rt.scans.append(record)
        existing = rt.artifacts.get(ref.artifact_id, ref.version_id or "null")
        save_artifact_state(rt, ref, record, download, stored, state, existing)
        removed = remove_plaintext_versions(
            rt.s3, ref.bucket, ref.key, keep=stored.version_id if released else None
        )
        return Encrypted(evaluated, stored, scan_id, state, download.sha256, download.size, removed)
    finally:
        download.path.unlink(missing_ok=True)


def plaintext_versions(s3: Any, bucket: str, key: str, *, keep: str | None) -> list[str]:
    """Version ids of `key` that are not ModelShield ciphertext (newest first), except `keep`."""
    found: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for version in page.get("Versions", []):
            if version["Key"] != key or version["VersionId"] == keep:
                continue
            vid = version["VersionId"]
            if int(version.get("Size") or 0) >= len(ENVELOPE_MAGIC):
                body = open_object(
                    s3, S3Location(bucket, key, vid), Range=f"bytes=0-{len(ENVELOPE_MAGIC) - 1}"
                )
                try:
                    if body.read(len(ENVELOPE_MAGIC)) == ENVELOPE_MAGIC:
                        continue
                finally:
                    body.close()
            found.append(vid)
    return found


def remove_plaintext_versions(s3: Any, bucket: str, key: str, *, keep: str | None) -> list[str]:
    """Delete every plaintext version of the key (only once its ciphertext is verified and recorded)."""
    removed = plaintext_versions(s3, bucket, key, keep=keep)
    for version_id in removed:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
    return removed


def recorded_context(s3: Any, bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    """The encryption context in an envelope's header (read only; KMS and the frames check it later)."""
    header, _ = parse_header(io.BytesIO(read_object_head(s3, bucket, key, version_id)))
    return dict(header.context)


def plaintext_version_of(context: dict[str, str]) -> str:
    return context.get(CTX_VERSION, "null")


def _delete(s3: Any, bucket: str, key: str, version_id: str | None) -> None:
    try:
        params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        s3.delete_object(**params)
    except Exception:  # noqa: S110 - best effort: an unreferenced version is visible and harmless
        pass


def _version(value: Any) -> str | None:
    return None if value in (None, "", "null") else str(value)
