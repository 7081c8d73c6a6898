"""The one shape of scan results on the command line (schemas/scan-result.schema.json).

`scan`, `upload --wait`, `rescan --wait` print a report: `{"results": [...], "summary": {...}}`;
`verdict` prints one result. A result is the same object whether it came from a local scan or from the
scans table: path, format, verdict, sha256, size, group, message, findings and rules, severities as
names. Tables end with the same summary line, naming the files that were blocked and the ones skipped.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelshield.errors import UsageError
from modelshield.models import Finding, RuleResult, RuleStatus, ScanRecord, Verdict

SCHEMA_FILE = "schemas/scan-result.schema.json"  # in the repository, validated against by the tests


def record_json(record: ScanRecord) -> dict[str, Any]:
    """A stored scan record as a result: the record as stored, plus `path` (its s3:// URI)."""
    return {"path": f"s3://{record.bucket}/{record.key}", **record.model_dump(mode="json")}


def summary(
    results: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    """Counts per verdict, the paths that did not pass (BLOCKED or ERROR), and what was not read."""
    verdicts = {v.value: 0 for v in Verdict}
    for result in results:
        verdicts[str(result["verdict"])] += 1
    blocked = [str(r["path"]) for r in results if not Verdict(r["verdict"]).releases]
    return {
        "total": len(results),
        "verdicts": verdicts,
        "blocked": blocked,
        "skipped": [{"path": s["path"], "reason": s["reason"]} for s in skipped],
    }


def report(results: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    return {"results": list(results), "summary": summary(results, skipped)}


def summary_line(counts: Mapping[str, Any], noun: str = "file", verb: str = "scanned") -> str:
    """`3 files scanned: 1 allowed, 2 blocked; blocked: a.pkl, b.pkl; skipped: link (symlink ...)`."""
    total = counts["total"]
    parts = ", ".join(
        f"{n} {verdict.lower().replace('_', ' ')}" for verdict, n in counts["verdicts"].items() if n
    )
    line = f"{total} {noun}{'' if total == 1 else 's'} {verb}: {parts or 'none'}"
    if counts["blocked"]:
        line += f"; not released: {', '.join(counts['blocked'])}"
    if counts["skipped"]:
        line += "; skipped: " + ", ".join(f"{s['path']} ({s['reason']})" for s in counts["skipped"])
    return line


@contextlib.contextmanager
def output_to(path: str | None) -> Iterator[None]:
    """`-o FILE`: the report goes to FILE (written whole, then renamed) instead of stdout."""
    if not path:
        yield
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"-o {path}: directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle):
            yield
        partial.replace(target)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    print(f"report written to {path}", file=sys.stderr)


def add_output_flag(parser: Any) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="write the report to FILE instead of stdout (any --format)",
    )


# -- tables: the same lines for a local scan and a stored verdict ------------------------------------
RULE_WIDTH = 18  # the longest rule id (MS-SCAN-INCOMPLETE)


def rule_line(rule: RuleResult) -> str:
    """`  FAIL    MS-CODE-EXEC  blocking  CRITICAL  message`; a disabled rule: `SKIPPED ... disabled`."""
    if rule.status == RuleStatus.SKIPPED:
        mode = "disabled"
    else:
        mode = "blocking" if rule.blocking else "warning"
    line = f"  {rule.status.value:<7} {rule.rule.value:<{RULE_WIDTH}}  {mode:<8}"
    if rule.status in (RuleStatus.FAIL, RuleStatus.ERROR):
        line += f"  {rule.severity.name:<8}  {rule.message}"
    elif rule.message and rule.status == RuleStatus.PASS:
        line += f"  {rule.message}"
    return line.rstrip()


def finding_line(finding: Finding) -> str:
    where = f"{finding.location}  " if finding.location else ""
    return f"    {finding.severity.name:<8}  {finding.rule.value:<{RULE_WIDTH}}  {where}{finding.message}"
