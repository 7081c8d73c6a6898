"""The dashboard's numbers computed the slow, obvious way: full scans of the tables, the full chain walk.

Tests compare metrics.json (counters) and the page (tiles) with these, so a drifting counter fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import boto3
from modelshield.audit import DECRYPT_ACTIONS, AuditLog
from modelshield.store.audit import DynamoAuditStore


def scan_all(table: Any) -> list[dict[str, Any]]:
    items, kwargs = [], {}
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def expected_from_tables(table: Callable[[str], Any], now: datetime) -> dict[str, Any]:
    """The numbers metrics.json must show, from full table scans (`table`: env name → boto3 Table)."""
    artifacts = scan_all(table("ARTIFACTS_TABLE"))
    scans = scan_all(table("SCANS_TABLE"))
    audit_table = table("AUDIT_TABLE")
    audit = [i for i in scan_all(audit_table) if i["pk"] == "chain"]

    def stored(item: dict[str, Any]) -> int:
        protected = item["encryption_state"] in ("ENCRYPTED", "QUARANTINED")
        return int(item["ciphertext_size"] if protected and "ciphertext_size" in item else item["size"])

    def state(name: str) -> dict[str, int]:
        chosen = [a for a in artifacts if a["encryption_state"] == name]
        return {"objects": len(chosen), "bytes": sum(stored(a) for a in chosen)}

    window_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    blocked = [
        s
        for s in scans
        if s.get("trigger", "upload") == "upload"
        and s["verdict"] in ("BLOCKED", "ERROR")
        and datetime.fromisoformat(s["scanned_at"].replace("Z", "+00:00")) >= window_start
    ]
    decrypts = Counter(
        r["decision"]
        for r in audit
        if r["action"] in DECRYPT_ACTIONS
        and datetime.fromisoformat(r["at"].replace("Z", "+00:00")) >= window_start
    )
    verdicts = Counter(a["verdict"] for a in artifacts)
    plaintext = [a for a in artifacts if a["encryption_state"] in ("PLAINTEXT", "FAILED")]
    resource = boto3.resource("dynamodb", endpoint_url=audit_table.meta.client.meta.endpoint_url)
    report = AuditLog(DynamoAuditStore(audit_table.name, resource)).verify()
    return {
        "encrypted": state("ENCRYPTED"),
        "quarantined": state("QUARANTINED"),
        "plaintext": {"objects": len(plaintext), "bytes": sum(stored(a) for a in plaintext)},
        "verdicts": {v: verdicts.get(v, 0) for v in ("ALLOWED", "ALLOWED_WITH_WARNINGS", "BLOCKED", "ERROR")},
        "blocked_uploads_24h": len(blocked),
        "decrypt_allowed_24h": decrypts.get("ALLOWED", 0),
        "decrypt_denied_24h": decrypts.get("DENIED", 0),
        "chain_ok": report.ok,
        "chain_records": report.checked,
    }


def assert_matches_tables(document: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {k: document["encrypted"][k] for k in ("objects", "bytes")} == expected["encrypted"]
    assert {k: document["quarantined"][k] for k in ("objects", "bytes")} == expected["quarantined"]
    assert {k: document["plaintext"][k] for k in ("objects", "bytes")} == expected["plaintext"]
    assert document["verdicts"] == expected["verdicts"]
    assert document["blocked_uploads"]["last_24h"] == expected["blocked_uploads_24h"]
    assert document["decrypt_attempts"]["allowed"] == expected["decrypt_allowed_24h"]
    assert document["decrypt_attempts"]["denied"] == expected["decrypt_denied_24h"]
    assert document["audit_chain"]["intact"] is expected["chain_ok"]
    assert document["audit_chain"]["records"] == expected["chain_records"]
