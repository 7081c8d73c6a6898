"""Decryption authorization: consumers request access, a Security Engineer approves, KMS grants enforce it.

Why grants: a KMS grant gives one principal `Decrypt` on one key, only for ciphertexts whose encryption
context equals the approved artifact's (EncryptionContextEquals), without editing the key policy. Grants
have no native expiry, so the expiry lives on the request: the rotation run retires expired grants, and
the decrypt path here refuses an expired, denied or mismatched grant before it ever calls KMS. The same
checks run whether or not KMS enforces them (moto does not), so they are defence in depth, not a stand-in.

Principals: an assumed-role session (`arn:aws:sts::A:assumed-role/R/session`) is the role `R`; sessions
names are chosen by the caller, so two sessions of one role are one principal. That makes the
self-approval rule strict: nobody approves a request made under their own role or user, whatever
session name they use. Grants name that IAM role (or user), i.e. the requester's principal only.
"""

from __future__ import annotations

import fnmatch
import io
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from modelshield.audit import AuditAction, AuditLog, AuditQuery, Decision
from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import decrypt_s3_to, read_object_head
from modelshield.crypto.streams import Expectation
from modelshield.errors import (
    AccessDenied,
    ArtifactNotFound,
    ConfigError,
    IntegrityError,
    KeyAccessError,
    ModelShieldError,
    RequestConflict,
    RequestNotFound,
    UsageError,
)
from modelshield.models import AccessRequest, ArtifactState, RequestStatus, ScanRecord, utcnow
from modelshield.observability import logger
from modelshield.release import VaultObject, release_refusal, row_refusal, scan_refusal

__all__ = [
    "AccessRequest",
    "AccessService",
    "RequestConflict",
    "RequestNotFound",
    "RequestStatus",
    "decrypt_with_grant",
    "vault_context_reader",
]

MAX_ACCESS_HOURS = 24 * 30  # longest grant a single approval may create
MAX_REASON_CHARS = 1000
GRANT_OPERATIONS = ["Decrypt"]


# -- principals -------------------------------------------------------------------------------------

_ARN = re.compile(r"^arn:(?P<partition>[^:]+):(?P<service>iam|sts)::(?P<account>\d{12}):(?P<resource>.+)$")


def normalize_principal(arn: str) -> str:
    """The IAM identity behind a caller ARN: assumed-role sessions become their role, sts users IAM users."""
    match = _ARN.match(arn.strip())
    if not match:
        return arn.strip()
    part, account, resource = match["partition"], match["account"], match["resource"]
    if match["service"] == "sts":
        if resource.startswith("assumed-role/"):
            role = resource.split("/")[1]
            return f"arn:{part}:iam::{account}:role/{role}"
        if resource.startswith("user/"):  # moto's get_caller_identity answers this form
            return f"arn:{part}:iam::{account}:{resource}"
    return f"arn:{part}:{match['service']}::{account}:{resource}"


def same_principal(a: str, b: str) -> bool:
    return normalize_principal(a) == normalize_principal(b)


def person_of(arn: str) -> str | None:
    """The person behind a caller ARN, where IAM names one; None where it does not.

    An assumed-role session's name (IAM Identity Center and SAML federation set it to the user; a trust
    policy can pin it with `sts:RoleSessionName` = `${aws:username}`), an IAM user's name, a federated
    user's name. A session name an assumer chose freely proves nothing: the README states that limit."""
    match = _ARN.match(arn.strip())
    if not match:
        return None
    resource = match["resource"]
    if match["service"] == "sts" and resource.startswith("assumed-role/"):
        parts = resource.split("/")
        return parts[2].lower() if len(parts) > 2 and parts[2] else None
    if resource.startswith("user/"):
        return resource.rsplit("/", 1)[-1].lower()
    if resource.startswith("federated-user/"):
        return resource.split("/", 1)[1].lower()
    return None


def same_person(a: str, b: str) -> bool:
    """Whether two caller ARNs name the same person (same session or user name), across roles."""
    pa, pb = person_of(a), person_of(b)
    return pa is not None and pa == pb


def matches_any(arn: str, patterns: str) -> bool:
    """Whether `arn` (as presented, or normalized) matches one of comma-separated fnmatch patterns."""
    candidates = {arn.strip(), normalize_principal(arn)}
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in wanted)


# -- collaborators ----------------------------------------------------------------------------------


class AccessStore(Protocol):
    def get(self, request_id: str) -> AccessRequest | None: ...
    def create(self, request: AccessRequest) -> AccessRequest: ...
    def save(self, request: AccessRequest, *, expected_revision: int) -> AccessRequest: ...
    def by_status(self, status: RequestStatus) -> Iterator[AccessRequest]: ...
    def by_artifact(self, artifact_id: str) -> Iterator[AccessRequest]: ...
    def all(self) -> Iterator[AccessRequest]: ...


class ArtifactLookup(Protocol):
    def get(self, artifact_id: str, version_id: str) -> ArtifactState | None: ...
    def versions(self, artifact_id: str) -> list[ArtifactState]: ...


class ScanLookup(Protocol):
    def latest(self, artifact_id: str, version_id: str | None = None) -> ScanRecord | None: ...


# Reads the authenticated encryption context of an artifact's vault object (its envelope header).
ContextReader = Callable[[ArtifactState], dict[str, str]]
# Reads the vault object's S3 metadata (x-amz-meta-*).
MetadataReader = Callable[[ArtifactState], dict[str, str]]


class AccessService:
    """Request, approve, deny, retire and migrate decryption grants; every step audited."""

    def __init__(
        self,
        *,
        store: AccessStore,
        artifacts: ArtifactLookup,
        kms: Any,
        audit: AuditLog,
        security_engineer_role: str | None,
        context_reader: ContextReader,
        scans: ScanLookup | None = None,
        metadata_reader: MetadataReader | None = None,
        retiring_principal: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_hours: int = MAX_ACCESS_HOURS,
        quarantine_prefix: str = "quarantine/",
    ) -> None:
        self.scans = scans
        self.read_metadata = metadata_reader
        self.quarantine_prefix = quarantine_prefix
        self.store = store
        self.artifacts = artifacts
        self.kms = kms
        self.audit = audit
        self.security_engineer_role = security_engineer_role
        self.read_context = context_reader
        self.retiring_principal = retiring_principal
        self.clock = clock
        self.max_hours = max_hours

    def record(
        self,
        action: AuditAction,
        about: AccessRequest | ArtifactState,
        *,
        principal: str,
        decision: Decision,
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """The one way this service writes the audit log: a record about a request (its artifact version
        and request id), or about an artifact version when no request exists (a refused request)."""
        self.audit.append(
            action,
            principal=principal,
            decision=decision,
            artifact_id=about.artifact_id,
            version_id=about.version_id,
            request_id=about.request_id if isinstance(about, AccessRequest) else None,
            reason=reason,
            detail=detail,
            idempotency_key=idempotency_key,
        )

    # -- request -----------------------------------------------------------------------------------
    def request(
        self, artifact_id: str, *, requester: str, reason: str, hours: int, version_id: str | None = None
    ) -> AccessRequest:
        reason = (reason or "").strip()
        if not reason:
            raise UsageError("a reason is required for an access request")
        if len(reason) > MAX_REASON_CHARS:
            raise UsageError(f"reason is longer than {MAX_REASON_CHARS} characters")
        if not 1 <= hours <= self.max_hours:
            raise UsageError(f"hours must be between 1 and {self.max_hours}, got {hours}")
        if not requester:
            raise UsageError("the requester's principal is unknown")
        artifact = self._artifact(artifact_id, version_id)
        refusal, _ = self._release(artifact)
        if refusal:
            self.record(
                AuditAction.ACCESS_REQUEST,
                artifact,
                principal=requester,
                decision=Decision.DENIED,
                reason=refusal,
            )
            raise AccessDenied(f"access to {artifact.artifact_id} ({artifact.version_id}) refused: {refusal}")
        request = AccessRequest(
            request_id=f"req-{uuid.uuid4().hex[:20]}",
            artifact_id=artifact.artifact_id,
            version_id=artifact.version_id,
            requester=requester,
            grantee=normalize_principal(requester),
            reason=reason,
            hours=hours,
            created_at=self.clock(),
        )
        self.record(
            AuditAction.ACCESS_REQUEST,
            request,
            principal=requester,
            decision=Decision.ALLOWED,
            reason=reason,
            detail={"hours": hours, "grantee": request.grantee},
        )
        return self.store.create(request)

    # -- decide ------------------------------------------------------------------------------------
    def approve(self, request_id: str, *, approver: str, reason: str = "") -> AccessRequest:
        request = self._pending(request_id, approver, AuditAction.ACCESS_APPROVE)
        if same_principal(approver, request.requester):
            self._refuse(request, approver, AuditAction.ACCESS_APPROVE, "self-approval is not allowed")
            raise AccessDenied(
                f"{approver} cannot approve request {request_id}: it was made by the same principal "
                f"({request.grantee}); another Security Engineer must approve it"
            )
        if same_person(approver, request.requester):
            self._refuse(request, approver, AuditAction.ACCESS_APPROVE, "self-approval by the same person")
            raise AccessDenied(
                f"{approver} cannot approve request {request_id}: it was made by the same person "
                f"({person_of(approver)}) under another role; another Security Engineer must approve it"
            )
        artifact = self._artifact(request.artifact_id, request.version_id)
        refusal, context = self._release(artifact)
        if refusal or context is None:
            why = refusal or "the vault object's encryption context could not be read"
            self._refuse(request, approver, AuditAction.ACCESS_APPROVE, why)
            raise AccessDenied(f"cannot approve request {request_id}: {why}")
        now = self.clock()
        self.record(
            AuditAction.ACCESS_APPROVE,
            request,
            principal=approver,
            decision=Decision.ALLOWED,
            reason=reason,
            detail={"requester": request.requester, "hours": request.hours},
            idempotency_key=f"approve:{request_id}",
        )
        key_arn = str(artifact.wrapping_key_arn)
        grant_id, token = self._create_grant(request, key_arn, context)
        approved = request.model_copy(
            update={
                "status": RequestStatus.APPROVED,
                "decided_by": approver,
                "decided_at": now,
                "decision_reason": reason,
                "key_arn": key_arn,
                "grant_id": grant_id,
                "grant_token": token,
                "encryption_context": context,
                "expires_at": now + timedelta(hours=request.hours),
            }
        )
        try:
            return self.store.save(approved, expected_revision=request.revision)
        except RequestConflict:
            # Someone decided first: the grant we made must not outlive this failed approval.
            self._revoke(key_arn, grant_id, request, approver, "approval lost a race with another decision")
            raise
        except BaseException:
            # The request could not be marked APPROVED (a table failure): no grant without an approved,
            # expiring request. The approval can simply be repeated.
            self._withdraw_grant(key_arn, grant_id, request, approver, "the approval could not be recorded")
            raise

    def deny(self, request_id: str, *, approver: str, reason: str = "") -> AccessRequest:
        request = self._pending(request_id, approver, AuditAction.ACCESS_DENY)
        self.record(
            AuditAction.ACCESS_DENY,
            request,
            principal=approver,
            decision=Decision.DENIED,
            reason=reason,
            detail={"requester": request.requester},
            idempotency_key=f"deny:{request_id}",
        )
        denied = request.model_copy(
            update={
                "status": RequestStatus.DENIED,
                "decided_by": approver,
                "decided_at": self.clock(),
                "decision_reason": reason,
            }
        )
        return self.store.save(denied, expected_revision=request.revision)

    def get(self, request_id: str) -> AccessRequest:
        request = self.store.get(request_id)
        if request is None:
            raise RequestNotFound(f"no access request {request_id}")
        return request

    def list(
        self,
        *,
        status: RequestStatus | None = None,
        artifact_id: str | None = None,
        requester: str | None = None,
    ) -> list[AccessRequest]:
        if status is not None:
            source: Iterator[AccessRequest] = self.store.by_status(status)
        elif artifact_id:
            source = self.store.by_artifact(artifact_id)
        else:
            source = self.store.all()
        out = [
            r
            for r in source
            if (artifact_id is None or r.artifact_id == artifact_id)
            and (requester is None or same_principal(r.requester, requester))
        ]
        return sorted(out, key=lambda r: r.created_at, reverse=True)

    # -- expiry and key changes (called by the rotation run) ---------------------------------------
    def retire_expired(self, *, principal: str, dry_run: bool = False) -> list[AccessRequest]:
        """Revoke the grant of every approved request past its expiry and mark it EXPIRED."""
        now = self.clock()
        retired: list[AccessRequest] = []
        for request in self.store.by_status(RequestStatus.APPROVED):
            if request.expires_at is None or request.expires_at > now:
                continue
            if dry_run:
                retired.append(request)
                continue
            if request.key_arn and request.grant_id:
                self._revoke(request.key_arn, request.grant_id, request, principal, "expired")
            expired = request.model_copy(update={"status": RequestStatus.EXPIRED, "retired_at": now})
            try:
                retired.append(self.store.save(expired, expected_revision=request.revision))
            except RequestConflict:
                continue  # another run retired it first; its grant is revoked either way
        return retired

    def migrate_grants(
        self, artifact: ArtifactState, *, new_key_arn: str, principal: str
    ) -> list[AccessRequest]:
        """After a re-wrap, move live grants for this artifact version to the new wrapping key.

        The old grant is revoked only after the new one exists, so an approved consumer is never cut off
        by rotation; the constraint (the encryption context) is unchanged because the header's context is.
        """
        moved: list[AccessRequest] = []
        now = self.clock()
        for request in self.store.by_artifact(artifact.artifact_id):
            if (
                request.version_id != artifact.version_id
                or request.status != RequestStatus.APPROVED
                or request.key_arn == new_key_arn
                or (request.expires_at is not None and request.expires_at <= now)
            ):
                continue
            # A row saying APPROVED is not an approval: the approval must be in the audit chain, made by
            # someone else than the requester, and the version must still be releasable.
            refusal = self._approval_evidence(request) or self._release(artifact, read_vault=False)[0]
            if refusal:
                self.record(
                    AuditAction.GRANT_CREATE,
                    request,
                    principal=principal,
                    decision=Decision.DENIED,
                    reason=f"grant not moved to {new_key_arn}: {refusal}",
                )
                continue
            grant_id, token = self._create_grant(request, new_key_arn, request.encryption_context)
            if request.key_arn and request.grant_id:
                self._revoke(request.key_arn, request.grant_id, request, principal, "artifact re-wrapped")
            updated = request.model_copy(
                update={"key_arn": new_key_arn, "grant_id": grant_id, "grant_token": token}
            )
            moved.append(self.store.save(updated, expected_revision=request.revision))
        return moved

    # -- decrypt-time checks -----------------------------------------------------------------------
    def authorize_decrypt(self, request_id: str, *, principal: str) -> DecryptAuthorization:
        """Everything that must hold before a grant token is handed to `principal` and used. The decision
        is audited either way: DENIED with the reason, or ALLOWED (the token released to the grantee)."""
        request = self.get(request_id)
        artifact = self.artifacts.get(request.artifact_id, request.version_id)

        def refuse(why: str) -> AccessDenied:
            self.record(
                AuditAction.ARTIFACT_DECRYPT,
                request,
                principal=principal,
                decision=Decision.DENIED,
                reason=why,
            )
            return AccessDenied(f"cannot decrypt {request.artifact_id} with request {request_id}: {why}")

        if request.status == RequestStatus.PENDING:
            raise refuse("the request has not been approved yet")
        if request.status == RequestStatus.DENIED:
            raise refuse(f"the request was denied by {request.decided_by}: {request.decision_reason or '-'}")
        if request.status == RequestStatus.EXPIRED:
            raise refuse(f"the grant expired at {request.expires_at} and was retired; request access again")
        if request.expires_at is None or request.expires_at <= self.clock():
            raise refuse(f"the grant expired at {request.expires_at}; request access again")
        if not same_principal(principal, request.grantee):
            raise refuse(f"the grant is for {request.grantee}, not {normalize_principal(principal)}")
        if artifact is None:
            raise refuse("the artifact record no longer exists")
        refusal, context = self._release(artifact)
        if refusal:
            raise refuse(refusal)
        if artifact.wrapping_key_arn != request.key_arn:
            raise refuse("the artifact is now wrapped by another key and the grant was not moved to it")
        if context != request.encryption_context:
            raise refuse("the vault object's encryption context differs from the one the grant allows")
        self.record(
            AuditAction.ARTIFACT_DECRYPT,
            request,
            principal=principal,
            decision=Decision.ALLOWED,
            detail={"grant_id": request.grant_id, "sha256": artifact.sha256, "stage": "authorized"},
        )
        return DecryptAuthorization.of(request, artifact)

    def record_decrypt_error(self, request_id: str, *, principal: str, reason: str) -> None:
        """A grantee's decrypt failed after authorization (S3, KMS, or a digest mismatch): recorded as
        ERROR. Only the grantee of an approved request can report one, so nobody else can write about it."""
        request = self.get(request_id)
        if request.status != RequestStatus.APPROVED or not same_principal(principal, request.grantee):
            raise AccessDenied(
                f"only the grantee of approved request {request_id} reports its decrypt errors"
            )
        self.record(
            AuditAction.ARTIFACT_DECRYPT,
            request,
            principal=principal,
            decision=Decision.ERROR,
            reason=reason[:500],
        )

    # -- internals ---------------------------------------------------------------------------------
    def _release(
        self, artifact: ArtifactState, *, read_vault: bool = True
    ) -> tuple[str | None, dict[str, str] | None]:
        """(why this version may not be released, or None; the vault object's context when read).

        Decided from the row, the latest append-only scan record and the vault object (release.py)."""
        refusal = row_refusal(artifact, quarantine_prefix=self.quarantine_prefix)
        if refusal:
            return refusal, None
        if self.scans is None:
            return "the scan records are not available here, so the release cannot be checked", None
        scan = self.scans.latest(artifact.artifact_id, artifact.version_id)
        if scan is not None and (unsealed := self.scans.seal_refusal(scan)):
            return unsealed, None
        if not read_vault:
            return release_refusal(artifact, scan, None, quarantine_prefix=self.quarantine_prefix), None
        refusal = scan_refusal(artifact, scan)
        if refusal:
            return refusal, None
        try:
            context = self.read_context(artifact)
        except ModelShieldError as exc:
            return f"the vault object could not be read: {exc}", None
        metadata = self.read_metadata(artifact) if self.read_metadata else {}
        vault = VaultObject(context=context, metadata=metadata)
        return release_refusal(artifact, scan, vault, quarantine_prefix=self.quarantine_prefix), context

    def _approval_evidence(self, request: AccessRequest) -> str | None:
        """Why the audit chain does not show this request approved by another principal, or None."""
        query = AuditQuery(
            artifact_id=request.artifact_id,
            action=AuditAction.ACCESS_APPROVE.value,
            decision=Decision.ALLOWED,
            limit=10_000,
        )
        for record in self.audit.list(query):
            if record.request_id != request.request_id:
                continue
            if same_principal(record.principal, request.requester) or same_person(
                record.principal, request.requester
            ):
                return "the audit chain's approval was made by the requester"
            if request.decided_by and not same_principal(record.principal, request.decided_by):
                return "the approver in the access table differs from the one in the audit chain"
            return None
        return "the audit chain has no approval for this request (was the access table edited?)"

    def _artifact(self, artifact_id: str, version_id: str | None) -> ArtifactState:
        if version_id:
            artifact = self.artifacts.get(artifact_id, version_id)
        else:
            versions = self.artifacts.versions(artifact_id)
            artifact = versions[0] if versions else None
        if artifact is None:
            raise ArtifactNotFound(
                f"no artifact {artifact_id}" + (f" version {version_id}" if version_id else "")
            )
        return artifact

    def _pending(self, request_id: str, approver: str, action: AuditAction) -> AccessRequest:
        request = self.get(request_id)
        if not self.security_engineer_role:
            raise ConfigError("SECURITY_ENGINEER_ROLE is not set: nobody can approve or deny access requests")
        if not matches_any(approver, self.security_engineer_role):
            self._refuse(request, approver, action, "not a Security Engineer")
            raise AccessDenied(
                f"{approver} is not a Security Engineer: the stack allows only {self.security_engineer_role} "
                "(its own setting; a SECURITY_ENGINEER_ROLE in your environment changes nothing)"
            )
        if request.status != RequestStatus.PENDING:
            raise RequestConflict(f"request {request_id} is already {request.status.value}")
        return request

    def _refuse(self, request: AccessRequest, principal: str, action: AuditAction, why: str) -> None:
        self.record(
            action,
            request,
            principal=principal,
            decision=Decision.DENIED,
            reason=why,
        )

    def _create_grant(
        self, request: AccessRequest, key_arn: str, context: Mapping[str, str]
    ) -> tuple[str, str]:
        kwargs: dict[str, Any] = {
            "KeyId": key_arn,
            "GranteePrincipal": request.grantee,
            "Operations": GRANT_OPERATIONS,
            "Constraints": {"EncryptionContextEquals": dict(context)},
            # KMS treats a repeated CreateGrant with the same name and parameters as the same grant.
            "Name": f"modelshield-{request.request_id}",
        }
        if self.retiring_principal:
            kwargs["RetiringPrincipal"] = self.retiring_principal
        try:
            response = self.kms.create_grant(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            self.record(
                AuditAction.GRANT_CREATE,
                request,
                principal=request.decided_by or "",
                decision=Decision.ERROR,
                reason=code,
            )
            raise KeyAccessError(f"KMS refused to create the grant on {key_arn}: {code}") from None
        grant_id, token = str(response["GrantId"]), str(response["GrantToken"])
        try:
            self.record(
                AuditAction.GRANT_CREATE,
                request,
                principal=request.grantee,
                decision=Decision.ALLOWED,
                detail={
                    "grant_id": grant_id,
                    "key_arn": key_arn,
                    "operations": GRANT_OPERATIONS,
                    "encryption_context_equals": dict(context),
                },
                idempotency_key=f"grant:{request.request_id}:{grant_id}",
            )
        except BaseException:
            # A grant the audit log does not show must not exist.
            self._withdraw_grant(
                key_arn, grant_id, request, request.decided_by or "", "its audit record failed"
            )
            raise
        return grant_id, token

    def _withdraw_grant(
        self, key_arn: str, grant_id: str, request: AccessRequest, principal: str, why: str
    ) -> None:
        """Revoke a grant made by an approval that then failed; the approval's own error is what the caller
        sees, so a failure here (KMS or the audit log down too) is logged, not raised over it."""
        try:
            self._revoke(key_arn, grant_id, request, principal, why)
        except Exception as exc:
            logger.error(
                "a grant of a failed approval could not be revoked",
                extra={
                    "grant_id": grant_id,
                    "key_arn": key_arn,
                    "request_id": request.request_id,
                    "error": str(exc),
                },
            )

    def _revoke(self, key_arn: str, grant_id: str, request: AccessRequest, principal: str, why: str) -> None:
        try:
            self.kms.revoke_grant(KeyId=key_arn, GrantId=grant_id)
            decision, note = Decision.ALLOWED, why
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "NotFoundException":
                self.record(
                    AuditAction.GRANT_RETIRE,
                    request,
                    principal=principal,
                    decision=Decision.ERROR,
                    reason=f"{why}: {code}",
                    detail={"grant_id": grant_id, "key_arn": key_arn},
                )
                raise KeyAccessError(f"KMS refused to revoke grant {grant_id} on {key_arn}: {code}") from None
            decision, note = Decision.ALLOWED, f"{why} (grant already gone)"
        self.record(
            AuditAction.GRANT_RETIRE,
            request,
            principal=principal,
            decision=decision,
            reason=note,
            detail={"grant_id": grant_id, "key_arn": key_arn},
            idempotency_key=f"retire:{request.request_id}:{grant_id}",
        )


# -- decrypting with a grant, reading the context it is constrained to --------------------------------


class DecryptAuthorization(BaseModel):
    """What an authorized grantee needs to decrypt one artifact version, and nothing more: where the vault
    copy is, the grant token, and the context and digest the plaintext must match. The API returns it
    (POST /access/requests/{id}/authorize-decrypt) only after `AccessService.authorize_decrypt` passed for
    the signing identity, and that decision is already in the audit chain."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    artifact_id: str
    version_id: str
    grantee: str
    grant_id: str
    grant_token: str
    key_arn: str
    vault_bucket: str
    vault_key: str
    vault_version_id: str | None
    encryption_context: dict[str, str]
    sha256: str | None

    @classmethod
    def of(cls, request: AccessRequest, artifact: ArtifactState) -> DecryptAuthorization:
        return cls(
            request_id=request.request_id,
            artifact_id=request.artifact_id,
            version_id=request.version_id,
            grantee=request.grantee,
            grant_id=str(request.grant_id),
            grant_token=str(request.grant_token),
            key_arn=str(request.key_arn),
            vault_bucket=str(artifact.vault_bucket),
            vault_key=str(artifact.vault_key),
            vault_version_id=artifact.vault_version_id,
            encryption_context=dict(request.encryption_context or {}),
            sha256=artifact.sha256,
        )


def decrypt_authorized(authorization: DecryptAuthorization, dest: Path, *, kms: Any, s3: Any) -> str:
    """Decrypt the authorized vault copy to `dest` with the grant token, under the caller's own
    credentials (KMS allows the Decrypt only through the grant); returns the plaintext sha256. Every KMS
    call carries the token, so it works before the grant has propagated. A plaintext whose digest is not
    the recorded one is removed, never left behind."""
    keyring = KmsKeyring(kms, grant_tokens=[authorization.grant_token])
    sha256 = decrypt_s3_to(
        authorization.vault_bucket,
        authorization.vault_key,
        authorization.vault_version_id,
        dest,
        s3=s3,
        expect=Expectation(keyring, authorization.encryption_context, allow_extra_context=False),
    )
    if authorization.sha256 and sha256 != authorization.sha256:
        Path(dest).unlink(missing_ok=True)
        raise IntegrityError(
            f"decrypted {authorization.artifact_id} has sha256 {sha256}, expected {authorization.sha256}"
        )
    return sha256


def decrypt_with_grant(
    service: AccessService,
    request_id: str,
    dest: Path,
    *,
    principal: str,
    s3: Any,
) -> str:
    """Authorize (audited: ALLOWED or DENIED) and decrypt an approved artifact to `dest` in one process;
    returns the plaintext sha256. A failure after authorization is recorded as ERROR. The CLI does the
    same in two halves, the authorization through the API (see `DecryptAuthorization`)."""
    authorization = service.authorize_decrypt(request_id, principal=principal)
    try:
        return decrypt_authorized(authorization, dest, kms=service.kms, s3=s3)
    except ModelShieldError as exc:
        service.record_decrypt_error(request_id, principal=principal, reason=str(exc))
        raise


def vault_context_reader(s3: Any) -> ContextReader:
    """Read an artifact's encryption context from its vault object's envelope header (a ranged GET).

    The header is authenticated by the data key, but here it is only read to learn the context the
    grant must be constrained to; KMS checks that context again on every Decrypt.
    """

    def read(artifact: ArtifactState) -> dict[str, str]:
        data = read_object_head(
            s3, str(artifact.vault_bucket), str(artifact.vault_key), artifact.vault_version_id
        )
        header, _ = parse_header(io.BytesIO(data))
        return dict(header.context)

    return read


def vault_metadata_reader(s3: Any) -> MetadataReader:
    """Read an artifact's vault object S3 metadata (HeadObject of the recorded version)."""

    def read(artifact: ArtifactState) -> dict[str, str]:
        params: dict[str, Any] = {"Bucket": str(artifact.vault_bucket), "Key": str(artifact.vault_key)}
        if artifact.vault_version_id:
            params["VersionId"] = artifact.vault_version_id
        try:
            head = s3.head_object(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise KeyAccessError(f"cannot read s3://{params['Bucket']}/{params['Key']}: {code}") from None
        return {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}

    return read
