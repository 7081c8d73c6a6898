"""`metrics.json`: one document from the counters, the audit chain's tail and KMS.

Cost per request, whatever the size of the tables: one query per counter partition (totals, capacity,
dkage, hourly: hundreds of small items at most), two gets for the chain state and head, the unverified
tail of the chain (normally a handful of records, capped), and three KMS calls per key in use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelshield.audit import ChainHead
from modelshield.dashboard.chain import verify_tail
from modelshield.dashboard.counters import STATES, hour_of
from modelshield.store.metrics import MetricsStore

WINDOW_HOURS = 24
HISTORY_DAYS = 90  # points in capacity_history (the running sum starts from the first day recorded)
TAIL_LIMIT = 1000  # chain records the page checks itself before saying "pending"
ROTATION_PERIOD = timedelta(days=365)  # KMS automatic rotation's default period
ROTATION_GRACE = timedelta(days=7)
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("< 30 days", 30),
    ("30-90 days", 90),
    ("90-180 days", 180),
    ("180-365 days", 365),
    ("> 1 year", None),
)
VERDICTS = ("ALLOWED", "ALLOWED_WITH_WARNINGS", "BLOCKED", "ERROR")


@dataclass
class MetricsSources:
    """What the document is computed from (each piece is a small interface, easy to build in tests)."""

    metrics: MetricsStore
    chain_head: Callable[[], ChainHead | None]
    chain_records_after: Callable[[int, int], Iterable[Any]]  # (seq, limit) -> AuditRecords ascending
    key_report: Callable[[dict[str, tuple[int, datetime | None]]], list[Any]]  # uses -> KeyStatus rows
    jobs: Callable[[], list[dict[str, Any]]]


def build_metrics(sources: MetricsSources, *, now: datetime | None = None) -> dict[str, Any]:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    totals = {item["sk"]: item for item in sources.metrics.partition("totals")}
    states = {s: totals.get(f"state#{s}", {}) for s in STATES}

    verdicts: dict[str, int] = dict.fromkeys(VERDICTS, 0)
    by_group: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(VERDICTS, 0))
    rules: list[dict[str, Any]] = []
    key_uses: dict[str, int] = {}
    for sk, item in totals.items():
        kind, _, rest = sk.partition("#")
        if kind == "verdict":
            group, _, verdict = rest.rpartition("#")
            count = int(item.get("objects", 0))
            if count:
                verdicts[verdict] = verdicts.get(verdict, 0) + count
                by_group[group][verdict] = by_group[group].get(verdict, 0) + count
        elif kind == "rule":
            rule, _, mode = rest.rpartition("#")
            if int(item.get("failures", 0)):
                rules.append(
                    {"rule": rule, "blocking": mode == "blocking", "failures": int(item["failures"])}
                )
        elif kind == "key" and int(item.get("objects", 0)):
            key_uses[rest] = int(item["objects"])
    rules.sort(key=lambda r: (-r["failures"], r["rule"], not r["blocking"]))

    window_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOW_HOURS - 1)
    hourly = list(sources.metrics.partition("hourly", sk_from=hour_of(window_start)))
    window = {
        name: sum(int(h.get(name, 0)) for h in hourly)
        for name in ("blocked_uploads", "decrypt_allowed", "decrypt_denied")
    }

    ages, oldest = _data_key_ages(sources.metrics.partition("dkage"), now)
    keys = _keys(
        sources.key_report({k: (n, oldest.get(k)) for k, n in key_uses.items()}), key_uses, oldest, now
    )

    jobs = sources.jobs()
    return {
        "generated_at": now.isoformat().replace("+00:00", "Z"),
        "encrypted": _count(states["ENCRYPTED"]),
        "quarantined": _count(states["QUARANTINED"]),
        "plaintext": _plaintext(states, jobs),
        "verdicts": verdicts,
        "verdicts_by_group": {g: by_group[g] for g in sorted(by_group)},
        "rule_failures": rules,
        "blocked_uploads": {
            "last_24h": window["blocked_uploads"],
            "total": int(totals.get("uploads", {}).get("blocked", 0)),
        },
        "decrypt_attempts": {
            "allowed": window["decrypt_allowed"],
            "denied": window["decrypt_denied"],
            "window_hours": WINDOW_HOURS,
            "window_start": window_start.isoformat().replace("+00:00", "Z"),
            "total": {
                "allowed": int(totals.get("decrypts", {}).get("allowed", 0)),
                "denied": int(totals.get("decrypts", {}).get("denied", 0)),
            },
        },
        "keys": keys,
        "keys_overdue": sum(1 for k in keys if k["overdue"]),
        "data_key_ages": ages,
        "audit_chain": _chain(sources),
        "jobs": jobs,
        "capacity_history": _history(sources.metrics.partition("capacity"), now),
    }


def _count(item: dict[str, Any]) -> dict[str, int]:
    return {"objects": int(item.get("objects", 0)), "bytes": int(item.get("bytes", 0))}


def _plaintext(states: dict[str, dict[str, Any]], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Plaintext models with no verified encrypted copy: upload versions (PLAINTEXT, FAILED: their only copy
    is the plaintext upload), and the models bulk jobs saw in repositories and left in plaintext, from the
    newest finished job over each source (`repositories`: what that job's settle step counted)."""
    ingest = _count(states["PLAINTEXT"])
    failed = _count(states["FAILED"])
    newest: dict[str, dict[str, Any]] = {}
    for job in jobs:  # newest first
        if job.get("finished_at") and job["source"] not in newest:
            newest[job["source"]] = job
    repositories = [
        {"source": source, "job_id": job["job_id"], "objects": job["plaintext"]["objects"],
         "bytes": job["plaintext"]["bytes"]}
        for source, job in newest.items()
        if job["plaintext"]["objects"]
    ]  # fmt: skip
    repo_objects = sum(r["objects"] for r in repositories)
    repo_bytes = sum(r["bytes"] for r in repositories)
    return {
        "objects": ingest["objects"] + failed["objects"] + repo_objects,
        "bytes": ingest["bytes"] + failed["bytes"] + repo_bytes,
        "by_state": {"PLAINTEXT": ingest, "FAILED": failed},
        "repositories": {"objects": repo_objects, "bytes": repo_bytes, "sources": repositories},
    }


def _data_key_ages(items: Iterable[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], dict]:
    counts = dict.fromkeys((label for label, _ in AGE_BUCKETS), 0)
    oldest: dict[str, datetime] = {}
    for item in items:
        key_arn, _, day = str(item["sk"]).rpartition("#")
        objects = int(item.get("objects", 0))
        if objects <= 0:
            continue
        created = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        if key_arn not in oldest or created < oldest[key_arn]:
            oldest[key_arn] = created
        age_days = (now - created).days
        for label, limit in AGE_BUCKETS:
            if limit is None or age_days < limit:
                counts[label] += objects
                break
    return [{"age": label, "objects": n} for label, n in counts.items()], oldest


def _keys(
    rows: list[Any], uses: dict[str, int], oldest: dict[str, datetime], now: datetime
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        last = row.last_rotation
        next_rotation = last + ROTATION_PERIOD if (row.rotation_enabled and last is not None) else None
        overdue = row.error is not None or row.rotation_enabled is not True
        if next_rotation is not None and now > next_rotation + ROTATION_GRACE:
            overdue = True
        first = oldest.get(row.key_arn)
        out.append(
            {
                "key_arn": row.key_arn,
                "groups": list(row.groups),
                "rotation_enabled": row.rotation_enabled,
                "key_state": row.key_state,
                "last_rotation": _iso(last),
                "next_rotation": _iso(next_rotation),
                "overdue": overdue,
                "artifacts": uses.get(row.key_arn, 0),
                "oldest_data_key": _iso(first),
                "oldest_data_key_days": (now - first).days if first else None,
                "error": row.error,
            }
        )
    return out


def _chain(sources: MetricsSources) -> dict[str, Any]:
    state, problems = sources.metrics.chain_state()
    head = sources.chain_head()
    head_seq = head.seq if head else 0
    tail_problems: list[str] = []
    pending = 0
    if head_seq > state.seq:
        tail = list(sources.chain_records_after(state.seq, TAIL_LIMIT))
        state, findings = verify_tail(state, tail)
        tail_problems = [f.message for f in findings]
        pending = max(0, head_seq - state.seq)
    if head is not None and head_seq == state.seq and head.hash != state.hash:
        tail_problems.append(f"the chain head (seq {head_seq}) does not match record {state.seq}")
    stored = [p["message"] for p in sources.metrics.problems()]
    total_problems = problems + len(tail_problems)
    return {
        "intact": total_problems == 0,
        "records": state.records,
        "problems": total_problems,
        "pending": pending,
        "head_seq": head_seq,
        "recent_problems": (tail_problems + stored)[:20],
    }


def _history(items: Iterable[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    running: dict[str, int] = defaultdict(int)
    points = []
    for item in sorted(items, key=lambda i: str(i["sk"])):
        for state in STATES:
            running[f"{state.lower()}_bytes"] += int(item.get(f"{state.lower()}_bytes", 0))
            running[f"{state.lower()}_objects"] += int(item.get(f"{state.lower()}_objects", 0))
        points.append(
            {
                "date": item["sk"],
                "encrypted_bytes": running["encrypted_bytes"],
                "quarantined_bytes": running["quarantined_bytes"],
                "plaintext_bytes": running["plaintext_bytes"] + running["failed_bytes"],
                "encrypted_objects": running["encrypted_objects"],
                "quarantined_objects": running["quarantined_objects"],
            }
        )
    first_day = (now - timedelta(days=HISTORY_DAYS)).strftime("%Y-%m-%d")
    return [p for p in points if p["date"] >= first_day]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
