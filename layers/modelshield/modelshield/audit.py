"""The tamper-evident audit log: one append-only, hash-chained sequence of records.

Why a chain: the audit table must show who asked for, granted, used and retired decryption access, and
a table row can be deleted or edited by anyone with enough IAM rights. Each record therefore stores the
hash of the previous record and its own hash over a canonical serialization (sorted-key JSON, ASCII,
no whitespace, domain-separated). Deleting a record leaves a gap in the sequence numbers; editing one
breaks its own hash, or, if the editor recomputed it, the next record's link. `verify()` walks the
chain in order with constant memory and says where it broke.

Why a chain head: sequence numbers are allocated by a conditional write on one head item in the same
transaction as the record, so two writers can never both write record N (a fork); the loser re-reads
the head and retries. An optional idempotency key (a CloudTrail eventID, a rotation action id) is
written in the same transaction, so redelivered events are recorded once.

What a chain cannot show: someone able to rewrite every record after N *and* the head can forge a
consistent chain. `verify(anchor=...)` compares against a head (seq, hash) saved elsewhere earlier; the
AuditAnchorFunction keeps such anchors automatically in an S3 Object Lock bucket (`audit_anchor.py`),
and `verify_against_latest_anchor` uses the newest one.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from modelshield.errors import AuditWriteError, UsageError
from modelshield.models import CTX_ARTIFACT, CTX_VERSION, utcnow

GENESIS_HASH = "0" * 64  # the "previous hash" of record 1
HASH_DOMAIN = b"modelshield-audit-v1\n"  # domain separation: this hash means nothing anywhere else
MAX_DETAIL_BYTES = 32 * 1024  # canonical JSON of `detail`; a DynamoDB item is limited to 400 KB
MAX_REASON_CHARS = 2000
MAX_APPEND_ATTEMPTS = 25  # head conflicts before giving up (each retry re-reads the head)


class ChainConflict(Exception):
    """Another writer moved the chain head first; re-read it and retry."""


class DuplicateEvent(Exception):
    """The idempotency key was already recorded; carries the sequence number of the first record."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"already recorded as audit record {seq}")
        self.seq = seq


class Decision(StrEnum):
    ALLOWED = "ALLOWED"  # the action happened / was permitted
    DENIED = "DENIED"  # refused (self-approval, AccessDenied in CloudTrail, expired grant ...)
    ERROR = "ERROR"  # attempted and failed for another reason
    INFO = "INFO"  # a report, not a decision (e.g. a key with rotation off)


class AuditAction(StrEnum):
    """Actions ModelShield records itself. CloudTrail events use `kms.<eventName>`."""

    ACCESS_REQUEST = "access.request"
    ACCESS_APPROVE = "access.approve"  # DENIED decision = a refused approval attempt
    ACCESS_DENY = "access.deny"
    GRANT_CREATE = "grant.create"
    GRANT_RETIRE = "grant.retire"
    ARTIFACT_DECRYPT = "artifact.decrypt"  # ModelShield's grant-checked decrypt path
    ROTATION_REWRAP = "rotation.rewrap"
    ROTATION_REKEY = "rotation.rekey"
    ROTATION_RETIRE = (
        "rotation.retire"  # a superseded vault copy whose deletion an earlier run could not finish
    )
    ROTATION_RUN = "rotation.run"
    KEY_ROTATION_DISABLED = "key.rotation-disabled"
    GROUP_CHANGE = "group.change"
    RESCAN = "artifact.rescan"
    JOB_START = "job.start"  # a bulk job (scan, encrypt, rekey, verify) was started or retried
    JOB_CANCEL = "job.cancel"


# Every step of a decryption authorization: asked, decided, granted, used (ModelShield's path and KMS's own
# CloudTrail record). The audit store tags these records for the dashboard's AttemptIndex.
DECRYPTION_ATTEMPT_ACTIONS: frozenset[str] = frozenset(
    {
        AuditAction.ACCESS_REQUEST,
        AuditAction.ACCESS_APPROVE,
        AuditAction.ACCESS_DENY,
        AuditAction.GRANT_CREATE,
        AuditAction.ARTIFACT_DECRYPT,
        "kms.Decrypt",
    }
)
DECRYPT_ACTIONS: frozenset[str] = frozenset({AuditAction.ARTIFACT_DECRYPT, "kms.Decrypt"})  # the key used
ATTEMPT_TAG = "decryption"  # the AttemptIndex partition value


def format_time(value: datetime) -> str:
    """One fixed textual form for timestamps, so the canonical bytes never depend on the writer."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class AuditRecord(BaseModel):
    """One link of the chain. Everything but `hash` is covered by `hash`."""

    model_config = ConfigDict(frozen=True)

    seq: int
    event_id: str
    at: datetime
    action: str
    decision: Decision
    principal: str = ""
    artifact_id: str | None = None
    version_id: str | None = None
    request_id: str | None = None
    reason: str = ""
    source: str = "modelshield"  # "modelshield" | "cloudtrail"
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str = ""

    def hashed_fields(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude={"hash"})
        body["at"] = format_time(self.at)
        return body

    def compute_hash(self) -> str:
        return hashlib.sha256(HASH_DOMAIN + canonical_json(self.hashed_fields())).hexdigest()

    def sealed(self) -> AuditRecord:
        return self.model_copy(update={"hash": self.compute_hash()})


@dataclass(frozen=True)
class ChainHead:
    seq: int = 0
    hash: str = GENESIS_HASH


class AuditQuery(BaseModel):
    """Filters for `AuditLog.list`. Empty fields do not filter."""

    artifact_id: str | None = None
    principal: str | None = None
    action: str | None = None
    decision: Decision | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    newest_first: bool = True


class AuditStore(Protocol):
    """Storage for the chain (one DynamoDB implementation in `modelshield.store.audit`)."""

    def head(self) -> ChainHead | None:
        """The head item, or None if the chain has never been written."""
        ...

    def append(self, record: AuditRecord, expected: ChainHead, idempotency_key: str | None) -> None:
        """Write `record` and move the head from `expected` atomically.

        Raises ChainConflict if the head moved, DuplicateEvent if the idempotency key exists."""
        ...

    def records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Every chain record with seq > after_seq, ascending, as stored (not re-hashed)."""
        ...

    def query(self, query: AuditQuery) -> Iterator[AuditRecord]:
        """Records matching the query, in the requested order (the caller stops at its limit)."""
        ...

    def get(self, seq: int) -> AuditRecord | None: ...


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    kind: str  # missing | edited | relinked | truncated | head-missing | anchor-mismatch | unreadable
    message: str


@dataclass
class VerifyReport:
    ok: bool
    checked: int
    head: ChainHead | None
    problems: list[ChainProblem] = field(default_factory=list)
    truncated_report: bool = False  # more problems than were kept
    anchor: ChainHead | None = None  # what the chain was checked against (the latest automatic anchor)
    anchor_source: str = ""  # "automatic" (anchor bucket), "given" (--anchor) or "" (none)
    # Set when the log could not be read at all (no endpoint, no table, access denied): nothing was
    # checked, which is not evidence of tampering either; the CLI exits with its own code for it.
    could_not_check: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "could_not_check": self.could_not_check,
            "checked": self.checked,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
            "anchor": None
            if self.anchor is None
            else {"seq": self.anchor.seq, "hash": self.anchor.hash, "source": self.anchor_source},
            "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in self.problems],
            "more_problems": self.truncated_report,
        }


class AuditLog:
    """Append, list and verify. Other modules only need `append`."""

    def __init__(
        self,
        store: AuditStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_attempts: int = MAX_APPEND_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self._clock = clock
        self._max_attempts = max_attempts
        self._sleep = sleep

    def append(
        self,
        action: str,
        *,
        principal: str = "",
        decision: Decision = Decision.ALLOWED,
        artifact_id: str | None = None,
        version_id: str | None = None,
        request_id: str | None = None,
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
        source: str = "modelshield",
        idempotency_key: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """Record one event at the end of the chain and return it (sealed, with its sequence number).

        With `idempotency_key`, a second call with the same key returns the first record instead.
        Raises AuditWriteError when the record cannot be written: callers must then not proceed.
        """
        detail_dict = dict(detail or {})
        if len(canonical_json(detail_dict)) > MAX_DETAIL_BYTES:
            raise UsageError(f"audit detail for {action} exceeds {MAX_DETAIL_BYTES} bytes")
        draft = AuditRecord(
            seq=0,
            event_id=uuid.uuid4().hex,
            at=at or self._clock(),
            action=str(action),
            decision=decision,
            principal=principal or "",
            artifact_id=artifact_id or None,
            version_id=version_id or None,
            request_id=request_id or None,
            reason=(reason or "")[:MAX_REASON_CHARS],
            source=source,
            detail=detail_dict,
            prev_hash=GENESIS_HASH,
        )
        for attempt in range(self._max_attempts):
            head = self.store.head() or ChainHead()
            record = draft.model_copy(update={"seq": head.seq + 1, "prev_hash": head.hash}).sealed()
            try:
                self.store.append(record, head, idempotency_key)
                return record
            except DuplicateEvent as dup:
                existing = self.store.get(dup.seq)
                if existing is None:  # pragma: no cover - the key and its record are written together
                    raise AuditWriteError(f"idempotency key {idempotency_key} points at no record") from None
                return existing
            except ChainConflict:
                # Full jitter keeps contending writers from retrying in lock step.
                self._sleep(random.uniform(0, min(0.5, 0.01 * (2**attempt))))
        raise AuditWriteError(
            f"could not append {action} to the audit chain after {self._max_attempts} tries"
        )

    def list(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        query = query or AuditQuery()
        out: list[AuditRecord] = []
        for record in self.store.query(query):
            out.append(record)
            if len(out) >= query.limit:
                break
        return out

    def verify(
        self, *, anchor: ChainHead | None = None, anchor_source: str = "given", max_problems: int = 100
    ) -> VerifyReport:
        """Walk the whole chain once, ascending, and report every break (up to `max_problems`)."""
        report = VerifyReport(
            ok=True, checked=0, head=None, anchor=anchor, anchor_source=anchor_source if anchor else ""
        )

        def problem(seq: int, kind: str, message: str) -> None:
            report.ok = False
            if len(report.problems) < max_problems:
                report.problems.append(ChainProblem(seq, kind, message))
            else:
                report.truncated_report = True

        expected_seq, prev_hash = 1, GENESIS_HASH
        anchor_seen = anchor is None
        try:
            for record in self.store.records():
                report.checked += 1
                if record.seq > expected_seq:
                    missing = (
                        f"record {expected_seq}"
                        if record.seq == expected_seq + 1
                        else f"records {expected_seq}-{record.seq - 1}"
                    )
                    problem(expected_seq, "missing", f"{missing} deleted (chain jumps to {record.seq})")
                elif record.prev_hash != prev_hash:
                    problem(
                        record.seq,
                        "relinked",
                        "record 1 does not start from the genesis hash"
                        if record.seq == 1
                        else f"record {record.seq} does not link to record {record.seq - 1}: "
                        f"record {record.seq - 1} was rewritten (its hash was recomputed)",
                    )
                if record.compute_hash() != record.hash:
                    problem(
                        record.seq,
                        "edited",
                        f"record {record.seq} ({record.action}) was edited: its content no longer matches "
                        "its stored hash",
                    )
                if anchor is not None and record.seq == anchor.seq:
                    anchor_seen = True
                    if record.hash != anchor.hash:
                        problem(
                            record.seq,
                            "anchor-mismatch",
                            f"record {record.seq} differs from the anchored one: the chain was rewritten "
                            f"from record {record.seq} or earlier",
                        )
                expected_seq, prev_hash = record.seq + 1, record.hash
            head = self.store.head()
        except Exception as exc:  # a malformed stored item is evidence too, never a crash
            from botocore.exceptions import BotoCoreError, ClientError

            from modelshield.aws import unreachable

            if isinstance(exc, BotoCoreError | ClientError):  # the store, not its content, failed
                report.ok = False
                report.could_not_check = str(unreachable(exc) or f"the audit table could not be read: {exc}")
                return report
            problem(expected_seq, "unreadable", f"record {expected_seq} could not be read: {exc}")
            return report
        report.head = head
        last = expected_seq - 1
        if head is None:
            if last > 0:
                problem(last, "head-missing", "the chain head item is missing")
        elif head.seq > last:
            problem(last + 1, "truncated", f"records {last + 1}-{head.seq} deleted from the end of the chain")
        elif head.seq < last or head.hash != prev_hash:
            problem(
                head.seq, "head-mismatch", f"the chain head (seq {head.seq}) does not match record {last}"
            )
        if not anchor_seen:
            seq = anchor.seq if anchor else 0
            problem(
                seq,
                "anchor-mismatch",
                f"anchored record {seq} is missing: the end of the chain was deleted, its head rolled back",
            )
        return report


def verify_against_latest_anchor(
    log: AuditLog, anchors: Any | None, *, anchor: ChainHead | None = None
) -> VerifyReport:
    """Verify the chain against `anchor` if given, else against the newest automatic anchor (if any).

    `anchors` is an anchor store (`audit_anchor.S3AnchorStore`) or None when none is configured. An
    unreadable anchor store raises: a configured anchor is never silently skipped."""
    if anchor is not None:
        return log.verify(anchor=anchor, anchor_source="given")
    latest = anchors.latest() if anchors is not None else None
    if latest is None:
        return log.verify()
    return log.verify(anchor=ChainHead(latest.seq, latest.hash), anchor_source="automatic")


# -- CloudTrail ---------------------------------------------------------------------------------------

# Encryption-context keys that name the artifact in KMS calls (see models.encryption_context).
CONTEXT_ARTIFACT_KEYS = (CTX_ARTIFACT,)
CONTEXT_VERSION_KEYS = (CTX_VERSION,)
KMS_EVENTS = frozenset(
    {
        "Decrypt",
        "CreateGrant",
        "RetireGrant",
        "RevokeGrant",
        "ReEncrypt",
        # Administration that could change who decrypts (template.yaml's AuditFunction rule sends them).
        "PutKeyPolicy",
        "DisableKey",
        "ScheduleKeyDeletion",
    }
)
_MAX_TEXT = 500


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def cloudtrail_decision(error_code: str | None) -> Decision:
    if not error_code:
        return Decision.ALLOWED
    return Decision.DENIED if "AccessDenied" in error_code else Decision.ERROR


def record_cloudtrail_event(audit: AuditLog, detail: Mapping[str, Any]) -> AuditRecord | None:
    """Append one KMS CloudTrail event (EventBridge `detail`) to the chain, once per eventID.

    Returns None for events that are not KMS calls we audit. Only bounded, non-secret fields are kept
    (CloudTrail itself never logs ciphertexts or plaintexts).
    """
    if detail.get("eventSource") != "kms.amazonaws.com" or detail.get("eventName") not in KMS_EVENTS:
        return None
    name = str(detail["eventName"])
    identity = detail.get("userIdentity") or {}
    params = detail.get("requestParameters") or {}
    response = detail.get("responseElements") or {}
    context = params.get("encryptionContext") or {}
    if not isinstance(context, Mapping):
        context = {}
    resources = detail.get("resources") or []
    key_arn = next((r.get("ARN") for r in resources if isinstance(r, Mapping) and r.get("ARN")), None)
    error_code = detail.get("errorCode")
    principal = identity.get("arn") or identity.get("invokedBy") or identity.get("principalId") or ""
    event_time = detail.get("eventTime")
    info: dict[str, Any] = {
        "event_name": name,
        "key_arn": key_arn or params.get("keyId"),
        "source_ip": detail.get("sourceIPAddress"),
        "user_agent": str(detail.get("userAgent") or "")[:_MAX_TEXT],
        "error_code": error_code,
        "error_message": str(detail.get("errorMessage") or "")[:_MAX_TEXT] or None,
        "encryption_context": {str(k)[:256]: str(v)[:1024] for k, v in list(context.items())[:64]},
        "aws_request_id": detail.get("requestID"),
        "cloudtrail_event_id": detail.get("eventID"),
    }
    if name == "CreateGrant":
        info["grantee"] = params.get("granteePrincipal")
        info["operations"] = params.get("operations")
        info["constraints"] = params.get("constraints")
        info["grant_id"] = (response or {}).get("grantId")
    elif name in ("RetireGrant", "RevokeGrant"):
        info["grant_id"] = params.get("grantId")
    at = None
    if isinstance(event_time, str):
        try:
            at = parse_time(event_time)
        except ValueError:
            at = None
    event_id = detail.get("eventID")
    return audit.append(
        f"kms.{name}",
        principal=str(principal),
        decision=cloudtrail_decision(error_code if isinstance(error_code, str) else None),
        artifact_id=_first(context, CONTEXT_ARTIFACT_KEYS),
        version_id=_first(context, CONTEXT_VERSION_KEYS),
        reason=str(error_code or ""),
        detail={k: v for k, v in info.items() if v not in (None, "", {}, [])},
        source="cloudtrail",
        idempotency_key=f"cloudtrail:{event_id}" if event_id else None,
        at=at,
    )
