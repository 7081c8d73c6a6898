"""The decryption-attempts log and the quarantine list: newest first, filtered, paged through indexes.

Attempts come from the audit table's sparse AttemptIndex (only decryption-attempt records carry
`attempt`), or from PrincipalIndex / ArtifactIndex when the filter names a principal or an artifact;
the outcome filter is a FilterExpression on the decision. A page reads at most `MAX_EVALUATED` index
items, so a rare filter over a huge log answers quickly with a cursor to continue rather than timing out.
The cursor is the last returned sequence number: opaque to callers, and the index key is rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from modelshield.audit import ATTEMPT_TAG, Decision
from modelshield.errors import UsageError
from modelshield.store.audit import ARTIFACT_INDEX, ATTEMPT_INDEX, CHAIN_PK, PRINCIPAL_INDEX, record_from_item

MAX_PAGE = 100
MAX_EVALUATED = 2000
QUARANTINE_INDEX = "StateIndex"  # ArtifactsTable's (encryption_state, updated_at) index

# The words the page shows for each step (never colour alone).
OUTCOME_WORDS: dict[tuple[str, str], str] = {
    ("access.request", "ALLOWED"): "requested",
    ("access.request", "DENIED"): "request refused",
    ("access.approve", "ALLOWED"): "approved",
    ("access.approve", "DENIED"): "approval refused",
    ("access.deny", "DENIED"): "denied by approver",
    ("grant.create", "ALLOWED"): "KMS grant created",
    ("grant.create", "ERROR"): "KMS grant failed",
    ("artifact.decrypt", "ALLOWED"): "decrypt allowed",
    ("artifact.decrypt", "DENIED"): "decrypt denied",
    ("artifact.decrypt", "ERROR"): "decrypt failed",
    ("kms.Decrypt", "ALLOWED"): "KMS Decrypt allowed",
    ("kms.Decrypt", "DENIED"): "KMS Decrypt denied",
    ("kms.Decrypt", "ERROR"): "KMS Decrypt failed",
}


def outcome_words(action: str, decision: str) -> str:
    return OUTCOME_WORDS.get((action, decision), f"{action} {decision.lower()}")


@dataclass(frozen=True)
class AttemptFilter:
    outcome: Decision | None = None
    principal: str | None = None
    artifact: str | None = None

    @classmethod
    def parse(cls, outcome: str | None, principal: str | None, artifact: str | None) -> AttemptFilter:
        decision = None
        if outcome:
            try:
                decision = Decision(outcome.strip().upper())
            except ValueError:
                choices = ", ".join(d.value for d in Decision if d is not Decision.INFO)
                raise UsageError(f"outcome must be one of {choices}, got {outcome!r}") from None
        return cls(decision, (principal or "").strip() or None, (artifact or "").strip() or None)


def parse_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    if not cursor.isdigit():
        raise UsageError(f"cursor must be the next_cursor of a previous page, got {cursor!r}")
    return int(cursor)


def attempts_page(
    table: Any,
    *,
    filters: AttemptFilter,
    cursor: str | None = None,
    limit: int = 25,
    approvers: Callable[[list[str]], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One page of decryption attempts, newest first: {"attempts": [...], "next_cursor": str | None}."""
    limit = max(1, min(limit, MAX_PAGE))
    before = parse_cursor(cursor)
    kwargs: dict[str, Any] = {"ScanIndexForward": False}
    extra: list[Any] = []
    if filters.artifact:
        index, hash_name, hash_value = ARTIFACT_INDEX, "artifact_id", filters.artifact
        extra.append(Attr("attempt").eq(ATTEMPT_TAG))
        if filters.principal:
            extra.append(Attr("principal").eq(filters.principal))
    elif filters.principal:
        index, hash_name, hash_value = PRINCIPAL_INDEX, "principal", filters.principal
        extra.append(Attr("attempt").eq(ATTEMPT_TAG))
    else:
        index, hash_name, hash_value = ATTEMPT_INDEX, "attempt", ATTEMPT_TAG
    kwargs["IndexName"] = index
    condition = Key(hash_name).eq(hash_value)
    if before is not None:
        condition = condition & Key("seq").lt(before)
    kwargs["KeyConditionExpression"] = condition
    if filters.outcome:
        extra.append(Attr("decision").eq(filters.outcome.value))
    if extra:
        combined = extra[0]
        for more in extra[1:]:
            combined = combined & more
        kwargs["FilterExpression"] = combined

    found: list[dict[str, Any]] = []
    evaluated = 0
    exhausted = False
    while len(found) < limit and evaluated < MAX_EVALUATED:
        kwargs["Limit"] = min(MAX_EVALUATED - evaluated, max(limit * 4, 50))
        page = table.query(**kwargs)
        evaluated += int(page.get("ScannedCount", len(page.get("Items", []))))
        found.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            exhausted = True
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    last_evaluated = kwargs.get("ExclusiveStartKey")
    items = found[:limit]
    records = [record_from_item(i) for i in items if i.get("pk", CHAIN_PK) == CHAIN_PK]
    request_ids = sorted({r.request_id for r in records if r.request_id})
    approver_of = approvers(request_ids) if (approvers and request_ids) else {}
    rows = []
    for r in records:
        approver = (
            r.principal
            if r.action in ("access.approve", "access.deny")
            else approver_of.get(r.request_id or "", "")
        )
        rows.append(
            {
                "seq": r.seq,
                "at": r.at.isoformat().replace("+00:00", "Z"),
                "action": r.action,
                "outcome": r.decision.value,
                "outcome_words": outcome_words(r.action, r.decision.value),
                "principal": r.principal,
                "artifact_id": r.artifact_id,
                "version_id": r.version_id,
                "request_id": r.request_id,
                "approver": approver or None,
                "reason": r.reason,
                "source": r.source,
            }
        )
    if len(found) > limit:
        next_cursor: str | None = str(int(items[-1]["seq"]))
    elif not exhausted and last_evaluated is not None:
        next_cursor = str(int(last_evaluated["seq"]))  # the evaluation budget ran out: continue from there
    else:
        next_cursor = None
    return {"attempts": rows, "next_cursor": next_cursor}


def quarantine_page(
    artifacts_table: Any,
    scans: Callable[[list[tuple[str, str]]], dict[tuple[str, str], dict]],
    *,
    cursor: str | None = None,
    limit: int = 25,
) -> dict[str, Any]:
    """Quarantined artifact versions, newest first, with the rules that failed in their latest scan."""
    limit = max(1, min(limit, MAX_PAGE))
    condition = Key("encryption_state").eq("QUARANTINED")
    if cursor:
        condition = condition & Key("updated_at").lt(cursor)
    kwargs: dict[str, Any] = {
        "IndexName": QUARANTINE_INDEX,
        "KeyConditionExpression": condition,
        "ScanIndexForward": False,
        "Limit": limit,
    }
    page = artifacts_table.query(**kwargs)
    items = page.get("Items", [])
    latest = scans(
        [(str(i["artifact_id"]), str(i["latest_scan_ref"])) for i in items if i.get("latest_scan_ref")]
    )
    rows = []
    for item in items:
        scan = latest.get((str(item["artifact_id"]), str(item.get("latest_scan_ref", ""))), {})
        failing = [
            {"rule": r.get("rule"), "status": r.get("status"), "blocking": bool(r.get("blocking"))}
            for r in scan.get("rules", [])
            if r.get("status") in ("FAIL", "ERROR")
        ]
        rows.append(
            {
                "artifact_id": item["artifact_id"],
                "version_id": item["version_id"],
                "sha256": item.get("sha256"),
                "group": item.get("group"),
                "verdict": item.get("verdict"),
                "failing_rules": failing,
                "updated_at": item.get("updated_at"),
            }
        )
    next_cursor = str(items[-1]["updated_at"]) if ("LastEvaluatedKey" in page and items) else None
    return {"quarantine": rows, "next_cursor": next_cursor}
