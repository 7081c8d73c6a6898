"""Checking the audit chain as it grows, from the audit table's stream, so the page never walks 1M records.

`AuditLog.verify()` walks the whole chain: right for `modelshield audit verify`, too slow for a page that
refreshes every few seconds. The stream delivers the chain's records in order (one partition key, one
shard), so each new link can be checked against the last verified one in O(1): sequence, previous hash
and its own hash. Anything that edits or deletes an existing link shows up on the same stream as a
MODIFY or REMOVE of a `chain` item and is recorded as a problem. The page then checks only the short tail
the stream has not reached yet (`verify_tail`).

What this cannot see: changes made while the stream was disabled or older than its 24 h retention, so
`modelshield audit verify` (the full walk) stays the reference; the page says when it last agreed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelshield.audit import GENESIS_HASH, AuditRecord


@dataclass(frozen=True)
class ChainState:
    """The last link the stream has verified."""

    seq: int = 0
    hash: str = GENESIS_HASH
    records: int = 0


@dataclass(frozen=True)
class ChainFinding:
    seq: int
    kind: str  # missing | relinked | edited | deleted
    message: str


def chain_step(state: ChainState, record: AuditRecord) -> tuple[ChainState, list[ChainFinding]]:
    """Check one appended link against the last verified one; replays (seq already seen) change nothing."""
    if record.seq <= state.seq:
        return state, []
    findings: list[ChainFinding] = []
    if record.seq != state.seq + 1:
        gap = f"{state.seq + 1}" if record.seq == state.seq + 2 else f"{state.seq + 1}-{record.seq - 1}"
        findings.append(ChainFinding(record.seq, "missing", f"records {gap} never appeared in the chain"))
    elif record.prev_hash != state.hash:
        findings.append(
            ChainFinding(record.seq, "relinked", f"record {record.seq} does not link to record {state.seq}")
        )
    if record.compute_hash() != record.hash:
        findings.append(
            ChainFinding(
                record.seq, "edited", f"record {record.seq} ({record.action}) does not match its hash"
            )
        )
    return ChainState(seq=record.seq, hash=record.hash, records=state.records + 1), findings


def tamper_finding(event_name: str, old: AuditRecord | None, seq: int) -> ChainFinding:
    """A MODIFY or REMOVE of an existing link: records are written once and never changed."""
    what = old.action if old is not None else "record"
    if event_name == "REMOVE":
        return ChainFinding(seq, "deleted", f"record {seq} ({what}) was deleted from the audit table")
    return ChainFinding(seq, "edited", f"record {seq} ({what}) was changed after it was written")


def verify_tail(state: ChainState, records: Iterable[AuditRecord]) -> tuple[ChainState, list[ChainFinding]]:
    """Continue the check over records the stream has not delivered yet (read from the table)."""
    findings: list[ChainFinding] = []
    for record in records:
        state, found = chain_step(state, record)
        findings.extend(found)
    return state, findings
