"""May this artifact version be released to a consumer? Decided from sources that must all agree.

Why not the artifacts row alone: it is a mutable current-state row, and anyone with UpdateItem on the
table could flip BLOCKED to ALLOWED. A release therefore needs, for the same artifact version:
- the artifacts row: a released verdict, ENCRYPTED, a vault location outside `quarantine/`;
- the latest append-only scan record: a released verdict, the same plaintext sha256 and vault location;
- the vault object itself: its authenticated encryption context (the envelope header, which KMS checks
  again on every Decrypt) names this artifact version, its plaintext sha256 and the consumer purpose
  `model-artifact` (quarantine copies carry `quarantine`, which the key policy never lets a grant name);
  its S3 metadata, when present, says ENCRYPTED and the same sha256.
Any disagreement is a refusal that says which sources disagree, so the refusal (audited by the caller)
points at the edit. Pure: the caller reads the sources and records the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from modelshield.models import (
    CTX_ARTIFACT,
    CTX_PURPOSE,
    CTX_SHA256,
    CTX_VERSION,
    PURPOSE_ARTIFACT,
    ArtifactState,
    EncryptionState,
    ScanRecord,
)

# S3 object metadata every vault and quarantine object carries (x-amz-meta-*): what it is, at a glance,
# consistent with the artifacts table (tests/integration check both).
META_STATE = "modelshield-state"  # ENCRYPTED | QUARANTINED
META_FORMAT = "modelshield-format"
META_SHA256 = "modelshield-plaintext-sha256"
META_WRAPPING_KEY = "modelshield-wrapping-key"
META_SCAN_ID = "modelshield-scan-id"
META_VERDICT = "modelshield-verdict"
META_ENVELOPE = "modelshield-envelope"  # the envelope format of the body


@dataclass(frozen=True)
class VaultObject:
    """What the vault object says about itself: its envelope header's context and its S3 metadata."""

    context: Mapping[str, str]
    metadata: Mapping[str, str] = field(default_factory=dict)


def row_refusal(artifact: ArtifactState, *, quarantine_prefix: str = "quarantine/") -> str | None:
    """Why the artifacts row alone already rules a release out, or None."""
    if not artifact.verdict.releases:
        return f"its verdict is {artifact.verdict.value}"
    if artifact.encryption_state != EncryptionState.ENCRYPTED:
        return f"it is {artifact.encryption_state.value}, not ENCRYPTED in the vault"
    if not (artifact.vault_bucket and artifact.vault_key and artifact.wrapping_key_arn):
        return "its vault location or wrapping key is not recorded"
    if artifact.vault_key.startswith(quarantine_prefix):
        return f"its vault copy is a quarantine copy ({artifact.vault_key}): quarantine is never released"
    return None


def _location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def scan_refusal(artifact: ArtifactState, scan: ScanRecord | None) -> str | None:
    """Why the latest scan record disagrees with a releasing artifacts row, or None."""
    if scan is None:
        return "there is no scan record for this version: the artifacts row alone never releases an artifact"
    said = f"the latest scan record ({scan.scan_id} at {scan.scanned_at:%Y-%m-%d %H:%M:%S}Z)"
    if not scan.verdict.releases:
        return (
            f"the artifacts row says {artifact.verdict.value} but {said} says {scan.verdict.value}: "
            "the sources disagree (was the artifacts row edited?)"
        )
    if scan.sha256 != artifact.sha256:
        return f"the artifacts row and {said} disagree on the plaintext sha256"
    if scan.vault_uri:
        bucket, key = _location(scan.vault_uri)
        if (bucket, key) != (artifact.vault_bucket, artifact.vault_key):
            return (
                f"the artifacts row points at s3://{artifact.vault_bucket}/{artifact.vault_key} but {said} "
                f"stored it at s3://{bucket}/{key}: the sources disagree"
            )
    return None


def vault_refusal(artifact: ArtifactState, scan: ScanRecord, vault: VaultObject) -> str | None:
    """Why the vault object's own context or metadata disagrees with the row and scan, or None."""
    context, metadata = vault.context, vault.metadata
    purpose = context.get(CTX_PURPOSE)
    if purpose != PURPOSE_ARTIFACT:
        return (
            f"the vault object is encrypted for purpose {purpose!r}, not {PURPOSE_ARTIFACT!r}: never released"
        )
    if (context.get(CTX_ARTIFACT), context.get(CTX_VERSION)) != (artifact.artifact_id, artifact.version_id):
        return (
            f"the vault object's encryption context names {context.get(CTX_ARTIFACT)} version "
            f"{context.get(CTX_VERSION)}, not this artifact version: the sources disagree"
        )
    if context.get(CTX_SHA256) != scan.sha256:
        return "the vault object's encryption context and the scan record disagree on the plaintext sha256"
    state = metadata.get(META_STATE)
    if state and state != EncryptionState.ENCRYPTED.value:
        return f"the vault object's metadata says {state}: the sources disagree"
    digest = metadata.get(META_SHA256)
    if digest and digest != scan.sha256:
        return "the vault object's metadata and the scan record disagree on the plaintext sha256"
    return None


def release_refusal(
    artifact: ArtifactState,
    scan: ScanRecord | None,
    vault: VaultObject | None,
    *,
    quarantine_prefix: str = "quarantine/",
) -> str | None:
    """Why this version may not be released to a consumer (first disagreement found), or None."""
    refusal = row_refusal(artifact, quarantine_prefix=quarantine_prefix) or scan_refusal(artifact, scan)
    if refusal or vault is None or scan is None:
        return refusal
    return vault_refusal(artifact, scan, vault)
