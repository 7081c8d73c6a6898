"""ModelAudit (promptfoo/modelaudit): `modelaudit scan --format json --output REPORT --no-cache FILE`.

Exit codes: 0 no issues, 1 security issues (WARNING or CRITICAL), 2 operational error or inconclusive.
A run that exits 2 but still reports a WARNING/CRITICAL issue is counted as flagged (the user is shown
the issue). Telemetry is switched off with ModelAudit's documented variables; nothing here has network
beyond the package index anyway. Caching is off so every run does the full work.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tools import Adapter, Classification, Outcome, ToolOutput, last_line, python_crash, shorten

REPORT = "modelaudit-report.json"
MAX_REPORT_BYTES = 32 << 20
SECURITY_SEVERITIES = frozenset({"critical", "warning"})


def build_command(venv: Path, target: Path, scratch: Path) -> list[str]:
    return [
        str(venv / "bin" / "modelaudit"),
        "scan",
        "--format",
        "json",
        "--output",
        str(scratch / REPORT),
        "--no-cache",
        str(target),
    ]


_ISSUE = re.compile(r'"message": "((?:[^"\\]|\\.)*)",\s*"severity": "(\w+)"')


def read_report(scratch: Path) -> dict[str, Any] | None:
    """The JSON report; for one too large to load (tens of thousands of issues on a big pickle), the
    issues found in its first MiB, which is enough to classify and describe the run."""
    path = scratch / REPORT
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            with path.open("rb") as f:
                head = f.read(1 << 20).decode("utf-8", errors="replace")
            issues = [{"message": m, "severity": s} for m, s in _ISSUE.findall(head)]
            return {"issues": issues, "truncated": True}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def classify(out: ToolOutput) -> Classification:
    report = read_report(out.scratch) or {}
    issues = [i for i in report.get("issues", []) if isinstance(i, dict)]
    security = [i for i in issues if str(i.get("severity", "")).lower() in SECURITY_SEVERITIES]
    security.sort(key=lambda i: str(i.get("severity", "")).lower() != "critical")  # critical first
    if out.returncode == 1 and not security and (crash := python_crash(out.stderr)):
        return Classification(Outcome.ERROR, f"crashed (exit {out.returncode}): {crash}")
    if out.returncode == 1 or security:
        messages = [f"{i.get('severity', '?')}: {i.get('message', '')}" for i in security]
        detail = "; ".join(dict.fromkeys(messages)) or "security issues found"
        if out.returncode == 2:
            detail = f"(exit 2) {detail}"
        if report.get("truncated"):
            detail = f"(report too large to load; from its first MiB) {detail}"
        return Classification(Outcome.FLAGGED, shorten(detail))
    if out.returncode == 0:
        info = len(issues)
        return Classification(Outcome.CLEAN, f"{info} info-level note(s)" if info else "")
    if issues:
        first = issues[0]
        detail = f"{first.get('severity', '?')}: {first.get('message', '')}"
        return Classification(Outcome.ERROR, shorten(f"exit {out.returncode}: {detail}"))
    if report and report.get("files_scanned") == 0:
        return Classification(Outcome.UNSUPPORTED, f"no file scanned (exit {out.returncode})")
    return Classification(Outcome.ERROR, f"exit {out.returncode}: {last_line(out.stderr or out.stdout)}")


ADAPTER = Adapter(
    name="modelaudit",
    # Extras for the corpus's formats (Keras .h5, ONNX, safetensors), pinned like the project's fixtures.
    # Not installed: the torch/tensorflow extras (multi-GB); ModelAudit scans those formats statically.
    packages=(
        "modelaudit[h5,onnx,safetensors]==0.2.54",
        "h5py==3.16.0",
        "onnx==1.23.2",
        "safetensors==0.8.0",
    ),
    distribution="modelaudit",
    build_command=build_command,
    classify=classify,
    environment={"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"},
    notes="`modelaudit scan --format json --output REPORT --no-cache FILE`; exit 1 or any WARNING/CRITICAL "
    "issue = flagged, 0 = clean, 2 = error. Telemetry disabled (PROMPTFOO_DISABLE_TELEMETRY=1).",
)
