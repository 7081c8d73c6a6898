"""Key compliance: which KMS keys protect what, whether KMS rotates them, and how old the data keys are.

Two different rotations meet here. KMS automatic rotation replaces a key's *backing material* yearly
(or on demand) while its ARN stays, and old material still unwraps old data keys: nothing needs
re-encrypting. ModelShield's own rotation (modelshield.rotation) moves artifacts to a group's *current
key* (a different ARN) and replaces data keys older than the group's maximum age. This report shows both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from modelshield.models import ArtifactState, EncryptionState


class KeyStatus(BaseModel):
    key_arn: str
    configured_as: list[str] = Field(default_factory=list)  # alias/id spellings used by groups
    groups: list[str] = Field(default_factory=list)  # groups whose *current* key this is
    rotation_enabled: bool | None = None  # None: could not be read
    last_rotation: datetime | None = None
    last_rotation_source: str | None = None  # "list_key_rotations" | "creation_date"
    key_state: str | None = None
    artifacts: int = 0  # artifact versions whose data key this key wraps
    oldest_data_key: datetime | None = None
    error: str | None = None

    @property
    def compliant(self) -> bool:
        return self.error is None and self.rotation_enabled is True


class KeyResolver:
    """Alias or key id → key ARN (describe_key), cached: groups name keys by alias, artifacts by ARN."""

    def __init__(self, kms: Any) -> None:
        self.kms = kms
        self._cache: dict[str, dict[str, Any]] = {}

    def describe(self, key_id: str) -> dict[str, Any]:
        if key_id not in self._cache:
            self._cache[key_id] = dict(self.kms.describe_key(KeyId=key_id)["KeyMetadata"])
        return self._cache[key_id]

    def arn(self, key_id: str) -> str:
        return str(self.describe(key_id)["Arn"])


def group_key_ids(groups: Iterable[Any], default_key_id: str) -> dict[str, str]:
    """Group name → the key id it encrypts new artifacts with (its own, or the stack default)."""
    return {group.name: (group.kms_key_id or default_key_id) for group in groups}


def key_status(
    *,
    kms: Any,
    groups: Sequence[Any],
    default_key_id: str,
    artifacts: Iterable[ArtifactState],
    resolver: KeyResolver | None = None,
) -> list[KeyStatus]:
    """One row per key: every group's current key, and every older key that still wraps artifacts."""
    resolver = resolver or KeyResolver(kms)
    rows: dict[str, KeyStatus] = {}

    def row(key_arn: str) -> KeyStatus:
        return rows.setdefault(key_arn, KeyStatus(key_arn=key_arn))

    for group, key_id in group_key_ids(groups, default_key_id).items():
        try:
            arn = resolver.arn(key_id)
        except ClientError as exc:
            failed = row(key_id)
            failed.groups.append(group)
            failed.error = f"cannot describe {key_id}: {exc.response.get('Error', {}).get('Code', exc)}"
            continue
        status = row(arn)
        status.groups.append(group)
        if key_id != arn and key_id not in status.configured_as:
            status.configured_as.append(key_id)
    for artifact in artifacts:
        if artifact.encryption_state not in (EncryptionState.ENCRYPTED, EncryptionState.QUARANTINED):
            continue
        if not artifact.wrapping_key_arn:
            continue
        status = row(artifact.wrapping_key_arn)
        status.artifacts += 1
        created = artifact.data_key_created_at
        if created is not None and (status.oldest_data_key is None or created < status.oldest_data_key):
            status.oldest_data_key = created
    for status in rows.values():
        if status.error is None:
            _fill_rotation(kms, resolver, status)
    return sorted(rows.values(), key=lambda s: (not s.groups, s.key_arn))


def _fill_rotation(kms: Any, resolver: KeyResolver, status: KeyStatus) -> None:
    try:
        metadata = resolver.describe(status.key_arn)
        status.key_state = metadata.get("KeyState")
        status.rotation_enabled = bool(
            kms.get_key_rotation_status(KeyId=status.key_arn)["KeyRotationEnabled"]
        )
    except ClientError as exc:
        status.error = f"{exc.response.get('Error', {}).get('Code', exc)}"
        return
    last = _last_rotation(kms, status.key_arn)
    if last is not None:
        status.last_rotation, status.last_rotation_source = last, "list_key_rotations"
    else:
        status.last_rotation, status.last_rotation_source = metadata.get("CreationDate"), "creation_date"


def _last_rotation(kms: Any, key_arn: str) -> datetime | None:
    latest: datetime | None = None
    kwargs: dict[str, Any] = {"KeyId": key_arn}
    try:
        while True:
            page = kms.list_key_rotations(**kwargs)
            for rotation in page.get("Rotations", []):
                when = rotation.get("RotationDate")
                if when is not None and (latest is None or when > latest):
                    latest = when
            if not page.get("Truncated"):
                return latest
            kwargs["Marker"] = page["NextMarker"]
    except ClientError:
        return latest  # older regions / key types: the creation date stands in


def keys_without_rotation(statuses: Iterable[KeyStatus]) -> list[KeyStatus]:
    """Keys in use whose automatic rotation is off (or unreadable): the compliance findings."""
    return [s for s in statuses if (s.groups or s.artifacts) and not s.compliant]
