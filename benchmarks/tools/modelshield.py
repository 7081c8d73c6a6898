"""ModelShield itself: `modelshield scan FILE --format json`, from the project's own virtualenv.

Exit codes: 0 allowed, 1 blocked or error verdict, 2 usage or I/O error. The built-in content-safety
policy is what runs. Both BLOCKED and ERROR (could not be shown safe: fail closed) count as flagged,
and the detail says which, so readers can tell a detection from a refusal to vouch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools import Adapter, Classification, Outcome, ToolOutput, last_line, shorten

REPO = Path(__file__).resolve().parents[2]
FLAGGED_VERDICTS = frozenset({"BLOCKED", "ERROR"})


def build_command(venv: Path, target: Path, scratch: Path) -> list[str]:
    return [str(venv / "bin" / "modelshield"), "scan", str(target), "--format", "json"]


def parse(stdout: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(stdout)
    except ValueError:
        return []
    results = data.get("results") if isinstance(data, dict) else None
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def _finding_text(finding: dict[str, Any]) -> str:
    return f"{finding.get('rule', '?')}: {finding.get('message', '')}"


def classify(out: ToolOutput) -> Classification:
    results = parse(out.stdout)
    if not results:
        return Classification(Outcome.ERROR, f"exit {out.returncode}: {last_line(out.stderr or out.stdout)}")
    verdicts = [str(r.get("verdict", "")) for r in results]
    findings = [f for r in results for f in r.get("findings", []) if isinstance(f, dict)]
    flagged = [v for v in verdicts if v in FLAGGED_VERDICTS]
    if flagged:
        verdict = "BLOCKED" if "BLOCKED" in flagged else "ERROR"
        detail = "; ".join(dict.fromkeys(_finding_text(f) for f in findings)) or "no findings listed"
        return Classification(Outcome.FLAGGED, shorten(f"{verdict}: {detail}"))
    if out.returncode == 0:
        warnings = [v for v in verdicts if v == "ALLOWED_WITH_WARNINGS"]
        return Classification(Outcome.CLEAN, "ALLOWED_WITH_WARNINGS" if warnings else "")
    return Classification(Outcome.ERROR, f"exit {out.returncode}: {last_line(out.stderr)}")


ADAPTER = Adapter(
    name="modelshield",
    packages=(),
    distribution="modelshield",
    build_command=build_command,
    classify=classify,
    notes="`modelshield scan FILE --format json` (content-safety policy); verdict BLOCKED or ERROR "
    "(fail closed) = flagged, ALLOWED / ALLOWED_WITH_WARNINGS = clean.",
    venv=REPO / ".venv",
)
