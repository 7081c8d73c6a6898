"""Every exception the services raise on purpose, with what the CLI and the API make of it.

One class per failure; each message says what was wrong, where, and what to do. `exit_code` is what the
`modelshield` command exits with (the CLI contract: 2 = usage or I/O error) and `http_status` what the
API answers. The CLI (`modelshield.cli.main`) and the API (`modelshield.api.error_response`) each read
these two attributes in exactly one place, so a new error is mapped by declaring it here.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class ModelShieldError(Exception):
    """Base of every error this package raises on purpose. The CLI prints these without a traceback."""

    exit_code: ClassVar[int] = 2
    http_status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR

    def detail(self) -> dict[str, Any]:
        """Structured fields the API adds to its error body next to `error` and `message` (none here)."""
        return {}


# -- the caller's request ---------------------------------------------------------------------------
class UsageError(ModelShieldError):
    """The caller asked for something malformed (bad flag, bad YAML, bad argument)."""

    http_status = HTTPStatus.BAD_REQUEST


class GroupsRefused(UsageError):
    """A groups document failed the checks against the live stack (a missing key, a taken source)."""

    def __init__(self, message: str, *, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems  # every problem: level, line, group, field, message

    def detail(self) -> dict[str, Any]:
        return {"problems": self.problems}


class AccessDenied(ModelShieldError):
    """The caller is not allowed to do this (e.g. approve their own access request)."""

    http_status = HTTPStatus.FORBIDDEN


# -- things that are not there ----------------------------------------------------------------------
class ArtifactNotFound(ModelShieldError):
    """The object, version or record asked for does not exist."""

    http_status = HTTPStatus.NOT_FOUND


class RequestNotFound(ModelShieldError):
    """No access request with that id."""

    http_status = HTTPStatus.NOT_FOUND


class GroupNotFound(ModelShieldError):
    """No group with that name is stored."""

    http_status = HTTPStatus.NOT_FOUND


# -- concurrent or conflicting changes --------------------------------------------------------------
class RequestConflict(ModelShieldError):
    """The request is not in a state that allows this (already decided, raced by another decision)."""

    http_status = HTTPStatus.CONFLICT


class GroupVersionConflict(ModelShieldError):
    """The stored group changed since the version this edit was based on."""

    http_status = HTTPStatus.CONFLICT


class ConcurrentUpdate(ModelShieldError):
    """Someone else changed the artifact record since it was read; re-read and retry."""


class ScanAlreadyRecorded(ModelShieldError):
    """A scan record with this artifact id and scan ref exists: the scans table is append-only."""


class JobConflict(ModelShieldError):
    """The bulk job is not in a state that allows this (finished, still running, changed meanwhile)."""

    http_status = HTTPStatus.CONFLICT


class RotationConflict(ModelShieldError):
    """The artifact's vault object changed while we rotated it; our new version was discarded."""


class CheckpointConflict(ModelShieldError):
    """Another run moved the job checkpoint first."""


# -- integrity and keys ------------------------------------------------------------------------------
class IntegrityError(ModelShieldError):
    """A stored object does not match what was written (checksum or size mismatch)."""

    http_status = HTTPStatus.CONFLICT


class EnvelopeError(ModelShieldError):
    """A ciphertext is malformed, truncated, tampered with, or its context does not match."""


class KeyAccessError(ModelShieldError):
    """KMS refused a data-key operation (no grant, expired grant, wrong key)."""

    http_status = HTTPStatus.BAD_GATEWAY


# -- infrastructure and environment ------------------------------------------------------------------
class ConfigError(ModelShieldError):
    """The environment or a configuration file is invalid."""


class StackNotRunning(ModelShieldError):
    """The local stack is not up (no state file, or the endpoint does not answer)."""


class StorageError(ModelShieldError):
    """An S3 call or local file operation failed for a reason other than "not found" / "denied"."""


class GroupStoreError(ModelShieldError):
    """DynamoDB refused or could not be reached (the message says which table and why)."""


class AuditWriteError(ModelShieldError):
    """The audit record could not be written (contention or storage failure): the action must not proceed."""


class ArtifactTooLarge(ModelShieldError):
    """The object does not fit in this function's ephemeral storage (`size` bytes; None if unknown)."""

    def __init__(self, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size
