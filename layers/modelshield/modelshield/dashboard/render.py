"""The page, rendered on the server from the same data as metrics.json (dashboard.js then refreshes it).

Plain HTML: semantic tables with captions and scoped headers, outcome words in every cell that has a
colour, a form for the filters that works without JavaScript, no inline script or style (the CSP forbids
both). Every value is escaped here; dashboard.js writes data with textContent only.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

ASSET_VERSION = "2"  # bump when static files change, so browsers do not keep a stale copy

TILES: tuple[tuple[str, str, str, str | None], ...] = (
    # (metric path, label, format, secondary metric path)
    ("encrypted.objects", "Encrypted objects", "count", "encrypted.bytes"),
    ("quarantined.objects", "Quarantined objects", "count", "quarantined.bytes"),
    ("plaintext.objects", "Plaintext, unprotected", "count", "plaintext.bytes"),
    ("blocked_uploads.last_24h", "Blocked uploads, 24 h", "count", None),
    ("decrypt_attempts.denied", "Denied decryptions, 24 h", "count", "decrypt_attempts.allowed"),
    ("audit_chain.problems", "Audit chain", "chain", "audit_chain.records"),
    ("keys_overdue", "KMS keys overdue for rotation", "count", None),
)
SECONDARY_LABEL = {
    "encrypted.bytes": "bytes",
    "quarantined.bytes": "bytes",
    "plaintext.bytes": "bytes",
    "decrypt_attempts.allowed": "allowed",
    "audit_chain.records": "records checked",
}
OUTCOMES = ("", "ALLOWED", "DENIED", "ERROR")


def lookup(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def tile_text(kind: str, value: Any) -> str:
    if kind == "chain":
        return "intact" if not value else f"broken: {value} problem{'s' if value != 1 else ''}"
    return f"{int(value or 0):,}"


def _tiles(metrics: dict[str, Any]) -> str:
    out = []
    for path, label, kind, secondary in TILES:
        value = lookup(metrics, path)
        state = "bad" if (value and path in ("audit_chain.problems", "keys_overdue")) else "ok"
        sub = ""
        if secondary:
            sub_value = lookup(metrics, secondary) or 0
            sub_text = human_bytes(sub_value) if secondary.endswith("bytes") else f"{int(sub_value):,}"
            sub = (
                f'<span class="sub" data-metric="{secondary}" data-value="{int(sub_value)}">'
                f'{escape(sub_text)}</span> <span class="sub-label">{SECONDARY_LABEL[secondary]}</span>'
            )
        out.append(
            f'<li class="tile" data-state="{state}"><span class="label">{escape(label)}</span>'
            f'<span class="value" data-metric="{path}" data-kind="{kind}" data-value="{int(value or 0)}">'
            f"{escape(tile_text(kind, value))}</span>{sub}</li>"
        )
    return '<ul class="tiles">' + "".join(out) + "</ul>"


def _table(caption: str, headers: list[str], rows: list[list[str]], *, table_id: str, empty: str) -> str:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    if rows:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    else:
        body = f'<tr class="empty"><td colspan="{len(headers)}">{escape(empty)}</td></tr>'
    return (
        f'<table id="{table_id}"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _outcome(decision: str, words: str) -> str:
    return (
        f'<span class="outcome" data-outcome="{escape(decision)}">{escape(decision)}</span> {escape(words)}'
    )


def verdict_link(artifact_id: str, version_id: str | None) -> str:
    query = urlencode({"artifact": artifact_id, "version": version_id or ""})
    return f'<a href="/verdict.json?{escape(query)}">verdict JSON</a>'


def attempt_rows(attempts: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            f'<time datetime="{escape(a["at"])}">{escape(a["at"][:19].replace("T", " "))}</time>',
            _outcome(a["outcome"], a["outcome_words"]),
            f'<span class="principal">{escape(a["principal"] or "-")}</span>',
            escape(a["artifact_id"] or "-"),
            escape(a["approver"] or "-"),
            escape(a["request_id"] or "-"),
        ]
        for a in attempts
    ]


def quarantine_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            escape(q["artifact_id"]),
            f"<code>{escape(q['version_id'])}</code>",
            f'<code title="{escape(q.get("sha256") or "")}">{escape((q.get("sha256") or "-")[:16])}</code>',
            escape(q.get("group") or "-"),
            escape(", ".join(f"{r['rule']} {r['status']}" for r in q["failing_rules"]) or "-"),
            escape(str(q.get("updated_at") or "")[:19].replace("T", " ")),
            verdict_link(q["artifact_id"], q["version_id"]),
        ]
        for q in items
    ]


def job_rows(jobs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for job in jobs:
        done, total = int(job.get("done", 0)), int(job.get("total", 0))
        rows.append(
            [
                escape(str(job.get("job_id", ""))),
                escape(str(job.get("operation", ""))),
                escape(str(job.get("source", ""))),
                escape(str(job.get("status", ""))),
                f'<progress max="{max(total, 1)}" value="{done}">{done}/{total}</progress> {done}/{total}',
                escape(str(job.get("failed", 0))),
                f'<a href="/jobs/errors.json?{escape(urlencode({"job": job.get("job_id", "")}))}">errors</a>',
            ]
        )
    return rows


def render_page(
    metrics: dict[str, Any],
    attempts: dict[str, Any],
    quarantine: dict[str, Any],
    *,
    filters: dict[str, str],
    refresh_seconds: int,
) -> str:
    verdict_headers = ["Group", "ALLOWED", "ALLOWED_WITH_WARNINGS", "BLOCKED", "ERROR"]
    verdict_rows = [
        [escape(group)] + [f"{counts.get(v, 0):,}" for v in verdict_headers[1:]]
        for group, counts in metrics["verdicts_by_group"].items()
    ]
    rule_rows = [
        [escape(r["rule"]), "blocking" if r["blocking"] else "non-blocking", f"{r['failures']:,}"]
        for r in metrics["rule_failures"][:10]
    ]
    key_rows = [
        [
            f"<code>{escape(k['key_arn'])}</code>",
            escape(", ".join(k["groups"]) or "-"),
            "on" if k["rotation_enabled"] else ("off" if k["rotation_enabled"] is False else "unknown"),
            escape((k["last_rotation"] or "-")[:10]),
            escape((k["next_rotation"] or "-")[:10]),
            '<span class="outcome" data-outcome="DENIED">OVERDUE</span>'
            if k["overdue"]
            else '<span class="outcome" data-outcome="ALLOWED">OK</span>',
            f"{k['artifacts']:,}",
            escape("-" if k["oldest_data_key_days"] is None else f"{k['oldest_data_key_days']} days"),
        ]
        for k in metrics["keys"]
    ]
    age_rows = [[escape(a["age"]), f"{a['objects']:,}"] for a in metrics["data_key_ages"]]
    history_rows = [
        [escape(p["date"]), human_bytes(p["encrypted_bytes"]), human_bytes(p["quarantined_bytes"])]
        for p in metrics["capacity_history"][-14:]
    ]
    options = "".join(
        f'<option value="{o}"{" selected" if filters.get("outcome", "") == o else ""}>{o or "any"}</option>'
        for o in OUTCOMES
    )
    older = ""
    if attempts.get("next_cursor"):
        query = urlencode({**{k: v for k, v in filters.items() if v}, "cursor": attempts["next_cursor"]})
        older = f'<a id="attempts-older" href="/?{escape(query)}#attempts">Older attempts</a>'
    chain = metrics["audit_chain"]
    problems = "".join(f"<li>{escape(p)}</li>" for p in chain["recent_problems"])
    generated = escape(metrics["generated_at"])
    principal, artifact = escape(filters.get("principal", "")), escape(filters.get("artifact", ""))
    t = {
        "capacity": _table(
            "Capacity by day (latest 14)", ["Date", "Encrypted", "Quarantined"], history_rows,
            table_id="capacity-table", empty="no history yet",
        ),
        "verdicts": _table(
            "Current artifact versions per verdict", verdict_headers, verdict_rows,
            table_id="verdicts-table", empty="no artifacts yet",
        ),
        "rules": _table(
            "Failures over all scans", ["Rule", "Mode", "Failures"], rule_rows,
            table_id="rules-table", empty="no rule has failed",
        ),
        "keys": _table(
            "KMS keys",
            ["Key", "Groups", "Rotation", "Last rotation", "Next rotation", "Status", "Artifacts",
             "Oldest data key"],
            key_rows, table_id="keys-table", empty="no keys",
        ),
        "ages": _table(
            "Data-key ages", ["Age", "Artifact versions"], age_rows,
            table_id="ages-table", empty="no data keys",
        ),
        "attempts": _table(
            "Newest first", ["Time (UTC)", "Outcome", "Principal", "Artifact", "Approver", "Request"],
            attempt_rows(attempts["attempts"]), table_id="attempts-table", empty="no attempts match",
        ),
        "quarantine": _table(
            "Quarantined artifact versions, newest first",
            ["Artifact", "Version", "sha256", "Group", "Failing rules", "Quarantined (UTC)", "Details"],
            quarantine_rows(quarantine["quarantine"]),
            table_id="quarantine-table", empty="nothing quarantined",
        ),
        "jobs": _table(
            "Jobs, newest first", ["Job", "Operation", "Source", "Status", "Progress", "Failed", "Details"],
            job_rows(metrics["jobs"]), table_id="jobs-table", empty="no jobs",
        ),
    }  # fmt: skip
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ModelShield compliance dashboard</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/uPlot.min.css?v={ASSET_VERSION}">
<link rel="stylesheet" href="/static/dashboard.css?v={ASSET_VERSION}">
<script src="/static/vendor/uPlot.iife.min.js?v={ASSET_VERSION}" defer></script>
<script src="/static/dashboard.js?v={ASSET_VERSION}" defer></script>
</head>
<body data-refresh-seconds="{int(refresh_seconds)}">
<a class="skip" href="#attempts">Skip to decryption attempts</a>
<header>
<h1>ModelShield compliance</h1>
<p>Updated <time id="generated-at" datetime="{generated}">{generated}</time>
<span id="refresh-status" role="status" aria-live="polite"></span>
· <a href="/metrics.json">metrics.json</a></p>
</header>
<main>
<section aria-labelledby="now-h"><h2 id="now-h">Now</h2>{_tiles(metrics)}
<ul id="chain-problems" class="problems">{problems}</ul></section>
<section aria-labelledby="capacity-h">
<h2 id="capacity-h">Encrypted storage capacity</h2>
<div id="capacity-chart" class="chart" role="img"
 aria-label="Encrypted and quarantined bytes per day"></div>
{t["capacity"]}
</section>
<div class="columns">
<section aria-labelledby="verdicts-h"><h2 id="verdicts-h">Verdicts by security group</h2>
{t["verdicts"]}
</section>
<section aria-labelledby="rules-h"><h2 id="rules-h">Rules that fail most</h2>
{t["rules"]}
</section>
</div>
<section aria-labelledby="keys-h"><h2 id="keys-h">Keys and data-key age</h2>
{t["keys"]}
{t["ages"]}
</section>
<section id="attempts" aria-labelledby="attempts-h">
<h2 id="attempts-h">Decryption authorization attempts</h2>
<form id="attempts-filter" method="get" action="/#attempts">
<label>Outcome <select name="outcome">{options}</select></label>
<label>Principal <input name="principal" type="text" value="{principal}" size="40"></label>
<label>Artifact <input name="artifact" type="text" value="{artifact}" size="40"></label>
<button type="submit">Filter</button> <a href="/#attempts">Clear</a>
</form>
{t["attempts"]}
<p class="pager">{older}</p>
</section>
<section aria-labelledby="quarantine-h"><h2 id="quarantine-h">Quarantine</h2>
{t["quarantine"]}
</section>
<section aria-labelledby="jobs-h"><h2 id="jobs-h">Bulk jobs</h2>
{t["jobs"]}
</section>
</main>
</body>
</html>
"""
