"""The domain's vocabulary: one Severity, stable rule ids, findings, scans and artifacts.

Every other module speaks in these types. They are pydantic models so that the same object is
validated on the way in (events, YAML, API bodies) and serialised on the way out (DynamoDB, JSON, SARIF).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer


def utcnow() -> datetime:
    return datetime.now(UTC)


class Severity(IntEnum):
    """How bad a finding is. The one severity scale in the project (SARIF levels derive from it)."""

    INFO = 10
    LOW = 20
    MEDIUM = 30
    HIGH = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        if value.strip().isdigit():  # records stored before severities were written as names
            return cls(int(value))
        return cls[value.strip().upper()]


# A severity field: read from a name ("CRITICAL") or a number (50, as older records stored it), written
# to JSON (the CLI, the API, DynamoDB) as the name. One representation everywhere a person or a script
# reads it (schemas/scan-result.schema.json); the numbers stay internal, for ordering.
SeverityName = Annotated[
    Severity,
    BeforeValidator(Severity.parse),
    PlainSerializer(lambda s: Severity(s).name, return_type=str, when_used="json"),
]


class RuleId(StrEnum):
    """Stable rule ids. Users suppress or re-grade rules by these names, so they never change.

    Scanner rules are raised by the format scanners while reading bytes; policy rules are evaluated
    from the scan report plus the artifact's metadata. The catalogue with rationale lives in
    `modelshield.policy.catalog`.
    """

    # -- scanner rules -------------------------------------------------------------------------
    CODE_EXEC = "MS-CODE-EXEC"  # imports/calls something that runs code, spawns, opens files/sockets
    CODE_UNKNOWN = "MS-CODE-UNKNOWN"  # imports a callable on neither the allowlist nor the denylist
    DATA_REFERENCE = "MS-DATA-REFERENCE"  # names data-building code nobody vouched for by name (a warning)
    MALFORMED = "MS-MALFORMED"  # structurally invalid, or built to be read differently by loaders
    ARCHIVE_UNSAFE = "MS-ARCHIVE-UNSAFE"  # traversal, links, bombs, references escaping the model
    BACKDOOR = "MS-BACKDOOR"  # architectural backdoor indicators in a computational graph
    SCAN_INCOMPLETE = "MS-SCAN-INCOMPLETE"  # unknown format, limit hit, scanner error: fail closed
    # -- policy rules --------------------------------------------------------------------------
    LICENSE = "MS-LICENSE"  # a license is declared, and approved when the group lists approved ones
    FORMAT_SAFE = "MS-FORMAT-SAFE"  # serialization format is one the group approves
    AUTHOR_VERIFIED = "MS-AUTHOR-VERIFIED"  # signed by a trusted key, or from an approved publisher
    SIZE_LIMIT = "MS-SIZE-LIMIT"  # artifact within the group's size limit
    HASH_PIN = "MS-HASH-PIN"  # sha256 not on the denylist (and on the allowlist when pinned)


class Format(StrEnum):
    """Serialization formats, detected from magic bytes and structure (the extension is a hint only)."""

    PICKLE = "pickle"
    PYTORCH_ZIP = "pytorch-zip"
    PYTORCH_LEGACY = "pytorch-legacy"
    TORCHSCRIPT = "torchscript"
    JOBLIB = "joblib"
    NUMPY = "numpy"
    NUMPY_NPZ = "numpy-npz"
    KERAS = "keras"
    KERAS_H5 = "keras-h5"
    TF_SAVEDMODEL = "tf-savedmodel"
    ONNX = "onnx"
    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    XGBOOST = "xgboost"  # Booster.save_model: UBJSON or JSON trees, no code
    LIGHTGBM = "lightgbm"  # Booster.save_model: the text model format, no code
    ZIP = "zip"
    TAR = "tar"
    SEVEN_ZIP = "7z"
    COMPRESSED = "compressed"  # gzip/bz2/xz/lzma/zlib stream around another format
    TEXT = "text"  # JSON, YAML, Markdown, plain text: inert data
    SIGNATURE = "signature"  # a detached signature or sigstore bundle: evidence about a model, not one
    EMPTY = "empty"
    UNKNOWN = "unknown"


# Formats whose loading executes a pickle (the ones a "safe formats only" group refuses).
PICKLE_BASED_FORMATS = frozenset(
    {Format.PICKLE, Format.PYTORCH_ZIP, Format.PYTORCH_LEGACY, Format.TORCHSCRIPT, Format.JOBLIB}
)


class Finding(BaseModel):
    """One thing a scanner or a rule found, carrying its rule id from the moment it is created."""

    model_config = ConfigDict(frozen=True)

    rule: RuleId
    severity: SeverityName
    message: str
    location: str = ""  # "model.zip!archive/data.pkl@1234" — path, then byte offset after '@'
    detail: dict[str, Any] = Field(default_factory=dict)  # e.g. {"global": "os.system", "opcode": "REDUCE"}


class ScanReport(BaseModel):
    """What the scanners found in one file (and everything nested inside it). Pure data, no verdict."""

    path: str
    format: Format
    size: int
    sha256: str | None = None
    findings: list[Finding] = Field(default_factory=list)
    # Facts read from the bytes that rules may use: e.g. {"license": "mit"} from GGUF metadata,
    # {"formats": ["pytorch-zip", "pickle"]} for everything seen, {"globals": [...]} imported.
    metadata: dict[str, Any] = Field(default_factory=dict)
    scanner_version: str = ""
    duration_ms: float = 0.0


class Verdict(StrEnum):
    ALLOWED = "ALLOWED"  # nothing failed
    ALLOWED_WITH_WARNINGS = "ALLOWED_WITH_WARNINGS"  # only non-blocking rules failed
    BLOCKED = "BLOCKED"  # a blocking rule failed
    ERROR = "ERROR"  # could not be evaluated: treated as blocked (fail closed)

    @property
    def releases(self) -> bool:
        """Whether consumers may receive the artifact."""
        return self in (Verdict.ALLOWED, Verdict.ALLOWED_WITH_WARNINGS)


class RuleStatus(StrEnum):
    PASS = "PASS"  # noqa: S105 - a rule status, not a password
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"  # disabled in the group


class RuleResult(BaseModel):
    rule: RuleId
    status: RuleStatus
    blocking: bool
    severity: SeverityName
    message: str = ""
    findings: list[Finding] = Field(default_factory=list)


class EncryptionState(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    ENCRYPTED = "ENCRYPTED"
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"  # encryption or verification failed; the ingest copy is kept


class ArtifactRef(BaseModel):
    """An S3 object version: what every scan, artifact record and idempotency key is about."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None

    @property
    def artifact_id(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ScanRecord(BaseModel):
    """One evaluation of one artifact version against one group: an append-only audit-trail entry.

    Stored in the scans table under PK `artifact_id`, SK `scan_ref` (`<scanned_at ISO>#<version>#<scan_id>`)
    so that the newest scan of an artifact is the first item of a descending query.
    """

    artifact_id: str  # "<bucket>/<key>"
    scan_ref: str
    scan_id: str
    bucket: str
    key: str
    version_id: str
    sha256: str | None = None
    size: int
    format: Format
    verdict: Verdict
    group: str
    group_version: int
    rules: list[RuleResult]
    findings: list[Finding]
    scanner_version: str
    scanned_at: datetime
    timings_ms: dict[str, float] = Field(default_factory=dict)
    encryption_state: EncryptionState = EncryptionState.PLAINTEXT
    vault_uri: str | None = None
    trigger: str = "upload"  # upload | rescan | job
    message: str = ""  # a one-line human summary (e.g. why the verdict is ERROR)
    etag: str | None = None  # the event's eTag: matches a version-less redelivery to this record
    mac: str | None = None  # KMS HMAC over the rest of the record (store/seal.py): who wrote it


class ArtifactState(BaseModel):
    """The current state of one artifact version (artifacts table: PK `artifact_id`, SK `version_id`)."""

    artifact_id: str
    version_id: str
    bucket: str
    key: str
    sha256: str | None = None
    size: int
    format: Format
    group: str
    verdict: Verdict
    encryption_state: EncryptionState
    vault_bucket: str | None = None
    vault_key: str | None = None
    vault_version_id: str | None = None
    ciphertext_size: int | None = None
    wrapping_key_arn: str | None = None  # KMS key that wraps the data key
    data_key_created_at: datetime | None = None
    last_modified: datetime | None = None  # the source object's, for ordering versions
    latest_scan_ref: str
    updated_at: datetime
    revision: int = 1  # bumped on every update; conditional writes compare it
    # The upload's user metadata and tags as first seen: rescans judge the vault copy with them once the
    # plaintext upload is gone (ModelShield's own modelshield-* tags are never kept here).
    source_metadata: dict[str, str] = Field(default_factory=dict)
    source_tags: dict[str, str] = Field(default_factory=dict)
    # A vault copy this version's record no longer names and that is still to be deleted ({"key",
    # "version_id"}): rotation sets it in the same write that moves the record to the new copy, and clears it
    # once the old copy is gone, so a failed delete is retried by the next run instead of being forgotten.
    superseded_vault_copy: dict[str, str] = Field(default_factory=dict)


# Encryption-context keys. They are authenticated in every envelope header and sent to KMS, where the key
# policy, the IAM policies in template.yaml and decryption grants constrain on them: renaming one is a
# breaking change for every stored artifact.
class RequestStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"  # a grant exists until expires_at
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"  # approved, then its grant was retired at expiry


class AccessRequest(BaseModel):
    """One request for decryption access to one artifact version (access table, PK `request_id`).

    A record, not a service: it lives here (not in `access`) so the store and the service both
    import it from below them."""

    request_id: str
    artifact_id: str
    version_id: str
    requester: str  # the caller's ARN as presented (session ARN for assumed roles)
    grantee: str  # the IAM principal a grant names: see normalize_principal
    reason: str
    hours: int
    status: RequestStatus = RequestStatus.PENDING
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str = ""
    key_arn: str | None = None  # KMS key the grant is on (the artifact's wrapping key)
    grant_id: str | None = None
    grant_token: str | None = None
    encryption_context: dict[str, str] = Field(default_factory=dict)  # the grant's constraint
    expires_at: datetime | None = None
    retired_at: datetime | None = None
    revision: int = 1

    def public(self) -> dict[str, Any]:
        """What list/show commands and the API return: the grant token stays with the grantee's calls."""
        return self.model_dump(mode="json", exclude={"grant_token"})


CTX_ARTIFACT = "modelshield:artifact"  # "<bucket>/<key>" of the ingest object
CTX_VERSION = "modelshield:version"  # the ingest object's version id
CTX_GROUP = "modelshield:group"  # the security group that evaluated it
CTX_SHA256 = "modelshield:sha256"  # sha256 of the plaintext
CTX_PURPOSE = "modelshield:purpose"  # always PURPOSE_ARTIFACT for vault objects
PURPOSE_ARTIFACT = "model-artifact"
# Quarantine copies carry their own purpose: the vault key policy lets no grant name it, so a quarantined
# artifact cannot be decrypted for a consumer whatever a table says.
PURPOSE_QUARANTINE = "quarantine"


def encryption_context(
    ref: ArtifactRef, *, sha256: str, group: str, purpose: str = PURPOSE_ARTIFACT
) -> dict[str, str]:
    """The encryption context that binds a vault object to the exact artifact version it came from
    (`purpose`: PURPOSE_ARTIFACT for consumer copies, PURPOSE_QUARANTINE for quarantine copies)."""
    return {
        CTX_ARTIFACT: ref.artifact_id,
        CTX_VERSION: ref.version_id or "null",
        CTX_GROUP: group,
        CTX_SHA256: sha256,
        CTX_PURPOSE: purpose,
    }
