"""What each change to the artifacts, scans and audit tables adds to the dashboard's counters (pure).

Why counters: the page must answer in well under a second with 100,000 artifacts and 1,000,000 audit
records, and a DynamoDB scan of either on every refresh would take minutes and cost per item read. So
every change is folded, once, into a few small items of the metrics table (PK `pk`, SK `sk`):

  totals   state#<ENCRYPTED|QUARANTINED|PLAINTEXT|FAILED>  objects, bytes   current artifact versions
  totals   verdict#<group>#<verdict>                      objects          current verdict per group
  totals   rule#<rule id>#<blocking|nonblocking>          failures         FAIL/ERROR in every scan
  totals   key#<kms key arn>                              objects          versions each key wraps
  totals   uploads | decrypts | audit                     blocked / allowed, denied / records
  dkage    <kms key arn>#<YYYY-MM-DD>                     objects          data keys created that day
  capacity <YYYY-MM-DD>                                   <state>_bytes, <state>_objects   that day's change
  hourly   <YYYY-MM-DDTHH>                                blocked_uploads, decrypt_allowed, decrypt_denied
  chain    verified | problem#<seq>#<kind>                the audit chain as the stream has checked it

An artifact change contributes its new image and takes back its old one (streams carry both), so the
totals are always "the current table, summed". Capacity history is the running sum of the daily
changes: exact, and it needs no scheduled snapshot. The functions here are pure; `store.py` applies a
delta atomically together with a once-only marker for the stream record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from modelshield.audit import DECRYPT_ACTIONS

STATES = ("ENCRYPTED", "QUARANTINED", "PLAINTEXT", "FAILED")
PROTECTED_STATES = frozenset({"ENCRYPTED", "QUARANTINED"})  # a vault copy exists, under a KMS data key
BLOCKING_VERDICTS = frozenset({"BLOCKED", "ERROR"})  # ERROR is treated as blocked (fail closed)
HOURLY_KEEP = timedelta(days=3)  # hourly items expire (TTL) after the 24 h window has passed them

Key = tuple[str, str]


@dataclass
class Delta:
    """Additions to counter items: {(pk, sk): {attribute: amount}}. Zero amounts are dropped."""

    adds: dict[Key, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, pk: str, sk: str, **amounts: int) -> None:
        item = self.adds[(pk, sk)]
        for name, amount in amounts.items():
            item[name] = item.get(name, 0) + int(amount)

    def merge(self, other: Delta, sign: int = 1) -> Delta:
        for (pk, sk), amounts in other.adds.items():
            self.add(pk, sk, **{k: sign * v for k, v in amounts.items()})
        return self

    def nonzero(self) -> dict[Key, dict[str, int]]:
        out: dict[Key, dict[str, int]] = {}
        for key, amounts in self.adds.items():
            kept = {k: v for k, v in amounts.items() if v}
            if kept:
                out[key] = kept
        return out

    def __bool__(self) -> bool:
        return bool(self.nonzero())


def day_of(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def hour_of(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H")


def parse_when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _int(value: Any) -> int:
    if isinstance(value, (int, Decimal)):
        return int(value)
    return 0


def stored_bytes(image: Mapping[str, Any]) -> int:
    """Bytes an artifact version occupies where it is kept: the vault ciphertext once protected."""
    if image.get("encryption_state") in PROTECTED_STATES and image.get("ciphertext_size") is not None:
        return _int(image.get("ciphertext_size"))
    return _int(image.get("size"))


def artifact_contribution(image: Mapping[str, Any], *, change_day: str) -> Delta:
    """What one artifact version adds to the counters while it is in the table."""
    delta = Delta()
    state = str(image.get("encryption_state") or "PLAINTEXT")
    size = stored_bytes(image)
    delta.add("totals", f"state#{state}", objects=1, bytes=size)
    delta.add(
        "totals", f"verdict#{image.get('group') or 'default'}#{image.get('verdict') or 'ERROR'}", objects=1
    )
    delta.add("capacity", change_day, **{f"{state.lower()}_bytes": size, f"{state.lower()}_objects": 1})
    key_arn = image.get("wrapping_key_arn")
    if state in PROTECTED_STATES and key_arn:
        delta.add("totals", f"key#{key_arn}", objects=1)
        created = parse_when(image.get("data_key_created_at"))
        if created is not None:
            delta.add("dkage", f"{key_arn}#{day_of(created)}", objects=1)
    return delta


def artifact_delta(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, changed_at: datetime
) -> Delta:
    """One artifacts-table change (insert, modify or remove): the new image in, the old image out."""
    day = day_of(changed_at)
    delta = Delta()
    if new:
        delta.merge(artifact_contribution(new, change_day=day))
    if old:
        delta.merge(artifact_contribution(old, change_day=day), sign=-1)
    return delta


def scan_delta(image: Mapping[str, Any]) -> Delta:
    """One appended scan record: rule failures, and blocked uploads per hour."""
    delta = Delta()
    delta.add("totals", "scans", records=1)
    for rule in image.get("rules") or []:
        if isinstance(rule, Mapping) and rule.get("status") in ("FAIL", "ERROR"):
            mode = "blocking" if rule.get("blocking") else "nonblocking"
            delta.add("totals", f"rule#{rule.get('rule')}#{mode}", failures=1)
    scanned = parse_when(image.get("scanned_at"))
    if image.get("trigger", "upload") == "upload" and image.get("verdict") in BLOCKING_VERDICTS:
        delta.add("totals", "uploads", blocked=1)
        if scanned is not None:
            delta.add("hourly", hour_of(scanned), blocked_uploads=1)
    return delta


def audit_delta(image: Mapping[str, Any]) -> Delta:
    """One appended audit record (pk=chain): decryptions allowed and denied, per hour and in total."""
    delta = Delta()
    delta.add("totals", "audit", records=1)
    if image.get("action") in DECRYPT_ACTIONS and image.get("decision") in ("ALLOWED", "DENIED"):
        word = "allowed" if image["decision"] == "ALLOWED" else "denied"
        delta.add("totals", "decrypts", **{word: 1})
        at = parse_when(image.get("at"))
        if at is not None:
            delta.add("hourly", hour_of(at), **{f"decrypt_{word}": 1})
    return delta
