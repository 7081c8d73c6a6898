"""The plaintext upload's bounded lifetime, and rescans that no longer need it.

Why: the ingest bucket is a drop zone. Once an upload version's vault (or quarantine) copy is written,
verified by S3 and the crypto layer, and recorded (scan record + artifacts row), its plaintext has no
purpose left. It is removed then -- immediately by default, or after the group's
`plaintext_retention_days` -- and nothing is removed before that replacement exists: the caller only
asks once the artifacts row points at a verified vault copy, and the sweep checks the row again.

Retention survives restarts: each pending removal is an item in the retention table (written before
the upload's processing finishes), swept hourly by PlaintextSweepFunction. Every removal is an audit
record (`ingest.plaintext-removed`). Metadata sidecars other uploads are judged with (`README.md` model
cards, `*.sig` signatures) stay: they are not model content, and only ModelShield reads the bucket.

Rescans read the vault copy instead (`VaultSource`), decrypting into the rescan function's ephemeral
storage only; the upload's user metadata and tags are kept in the artifacts row for them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from modelshield.audit import AuditLog, Decision
from modelshield.aws import is_not_found
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import decrypt_s3_to
from modelshield.crypto.streams import Expectation
from modelshield.errors import IntegrityError
from modelshield.models import (
    CTX_ARTIFACT,
    CTX_SHA256,
    CTX_VERSION,
    ArtifactRef,
    ArtifactState,
    EncryptionState,
    utcnow,
)
from modelshield.observability import logger

PLAINTEXT_REMOVED = "ingest.plaintext-removed"
PLAINTEXT_KEPT = "ingest.plaintext-retained"
FORGED_TAGS = "ingest.forged-tags"
SIDECAR_NAMES = ("README.md",)
SIDECAR_SUFFIXES = (".sig",)


def is_sidecar(key: str) -> bool:
    """Metadata files the pipeline reads for *other* uploads under the same prefix (kept in ingest)."""
    name = key.rsplit("/", 1)[-1]
    return name in SIDECAR_NAMES or name.endswith(SIDECAR_SUFFIXES)


def replacement_verified(state: ArtifactState | None) -> bool:
    """Whether the artifacts row records a verified vault or quarantine copy of this version."""
    return bool(
        state is not None
        and state.encryption_state in (EncryptionState.ENCRYPTED, EncryptionState.QUARANTINED)
        and state.vault_bucket
        and state.vault_key
        and state.vault_version_id
    )


@dataclass(frozen=True)
class PendingRemoval:
    artifact_id: str
    version_id: str
    bucket: str
    key: str
    delete_after: datetime

    def ref(self) -> ArtifactRef:
        return ArtifactRef(bucket=self.bucket, key=self.key, version_id=self.version_id)


class RetentionStore:
    """The retention table (PK artifact_id, SK version_id): removals waiting out a group's retention."""

    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)

    def put(self, item: PendingRemoval) -> None:
        self.table.put_item(
            Item={
                "artifact_id": item.artifact_id,
                "version_id": item.version_id,
                "bucket": item.bucket,
                "key": item.key,
                "delete_after": item.delete_after.isoformat(),
            }
        )

    def due(self, now: datetime) -> Iterator[PendingRemoval]:
        kwargs: dict[str, Any] = {"FilterExpression": Attr("delete_after").lte(now.isoformat())}
        while True:
            page = self.table.scan(**kwargs)
            for raw in page.get("Items", []):
                yield PendingRemoval(
                    artifact_id=str(raw["artifact_id"]),
                    version_id=str(raw["version_id"]),
                    bucket=str(raw["bucket"]),
                    key=str(raw["key"]),
                    delete_after=datetime.fromisoformat(str(raw["delete_after"])),
                )
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete(self, artifact_id: str, version_id: str) -> None:
        self.table.delete_item(Key={"artifact_id": artifact_id, "version_id": version_id})


@dataclass
class PlaintextLifetime:
    """Removes (or schedules the removal of) plaintext upload versions once their replacement exists."""

    s3: Any
    audit: AuditLog | None
    retention: RetentionStore | None
    principal: str = "ScanFunction"
    clock: Callable[[], datetime] = utcnow

    def after_verdict(self, ref: ArtifactRef, state: ArtifactState | None, retention_days: int) -> str:
        """Called once the scan record and the artifacts row are written. Returns what happened."""
        if not replacement_verified(state):
            return "kept: no verified vault or quarantine copy is recorded"
        if is_sidecar(ref.key):
            return "kept: a metadata sidecar other uploads are judged with"
        if retention_days > 0 and self.retention is not None:
            due = self.clock() + timedelta(days=retention_days)
            self.retention.put(
                PendingRemoval(ref.artifact_id, ref.version_id or "null", ref.bucket, ref.key, due)
            )
            self._record(PLAINTEXT_KEPT, ref, Decision.INFO, f"removal scheduled after {due.isoformat()}")
            return f"scheduled: removal after {due.isoformat()}"
        self.remove(ref, why="its vault copy is verified and recorded")
        return "removed"

    def remove(self, ref: ArtifactRef, *, why: str) -> None:
        params: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id and ref.version_id != "null":
            params["VersionId"] = ref.version_id
        try:
            self.s3.delete_object(**params)
        except ClientError as exc:
            if not is_not_found(exc):
                raise
        self._record(PLAINTEXT_REMOVED, ref, Decision.ALLOWED, why)

    def sweep(self, artifacts: Any) -> dict[str, int]:
        """Remove every plaintext whose retention has passed, if its replacement is still recorded."""
        counts = {"removed": 0, "kept": 0}
        if self.retention is None:
            return counts
        for item in self.retention.due(self.clock()):
            state = artifacts.get(item.artifact_id, item.version_id)
            if not replacement_verified(state):
                counts["kept"] += 1
                self._record(
                    PLAINTEXT_KEPT,
                    item.ref(),
                    Decision.ERROR,
                    "retention passed but no verified copy is recorded",
                )
                continue
            self.remove(item.ref(), why="its group's plaintext retention has passed")
            self.retention.delete(item.artifact_id, item.version_id)
            counts["removed"] += 1
        return counts

    def forged_tags(self, ref: ArtifactRef, tags: dict[str, str]) -> None:
        """An upload arrived already carrying ModelShield's tags: nobody but ModelShield may set them."""
        logger.warning("upload arrived with ModelShield tags", extra={"tags": tags})
        self._record(
            FORGED_TAGS,
            ref,
            Decision.DENIED,
            "the upload arrived carrying ModelShield's own tags; they were ignored and overwritten",
            detail={"tags": tags},
        )

    def _record(
        self,
        action: str,
        ref: ArtifactRef,
        decision: Decision,
        reason: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if self.audit is None:
            return
        self.audit.append(
            action,
            principal=self.principal,
            decision=decision,
            artifact_id=ref.artifact_id,
            version_id=ref.version_id,
            reason=reason,
            detail=detail or {},
        )


# -- rescans from the vault copy --------------------------------------------------------------------


class VaultSource:
    """`MetadataSource` for a rescan: the upload's metadata as recorded, siblings read from ingest."""

    def __init__(self, state: ArtifactState, siblings: Any) -> None:
        self.state = state
        self.siblings = siblings

    def object_metadata(self) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.state.source_metadata), dict(self.state.source_tags)

    def read_sibling(self, name: str, limit: int) -> bytes | None:
        return self.siblings.read_sibling(name, limit)

    def sibling_file(self, name: str, limit: int) -> Path | None:
        return self.siblings.sibling_file(name, limit)


def decrypt_vault_copy(s3: Any, kms: Any, state: ArtifactState, workdir: Path) -> tuple[Path, str, int]:
    """Decrypt the recorded vault copy of `state` into a private file under `workdir`.

    The header's context must name this artifact version and its recorded sha256, and the plaintext
    must hash to it; otherwise nothing is left behind. Returns (path, sha256, size)."""
    expected = {CTX_ARTIFACT: state.artifact_id, CTX_VERSION: state.version_id}
    if state.sha256:
        expected[CTX_SHA256] = state.sha256
    fd, name = tempfile.mkstemp(prefix="rescan-", dir=workdir)
    os.close(fd)
    path = Path(name)
    try:
        digest = decrypt_s3_to(
            str(state.vault_bucket),
            str(state.vault_key),
            state.vault_version_id,
            path,
            s3=s3,
            expect=Expectation(KmsKeyring(kms), expected, allow_extra_context=True),
        )
        if state.sha256 and digest != state.sha256:
            raise IntegrityError(
                f"vault copy of {state.artifact_id} decrypts to sha256 {digest}, recorded {state.sha256}"
            )
        return path, digest, path.stat().st_size
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
