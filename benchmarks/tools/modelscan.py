"""modelscan (protectai/modelscan): `modelscan -p FILE -r json -o REPORT`.

Exit codes: 0 no issues, 1 issues found, 2 scan errors, 3 no supported file scanned, 4 usage error.
Any issue in the JSON report (of any severity) counts as flagged, as the exit code does; a file that
modelscan skips as unsupported maps to unsupported rather than clean or missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools import Adapter, Classification, Outcome, ToolOutput, last_line, python_crash, shorten

REPORT = "modelscan-report.json"
MAX_REPORT_BYTES = 32 << 20


def build_command(venv: Path, target: Path, scratch: Path) -> list[str]:
    return [str(venv / "bin" / "modelscan"), "-p", str(target), "-r", "json", "-o", str(scratch / REPORT)]


def read_report(scratch: Path) -> dict[str, Any] | None:
    path = scratch / REPORT
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _issue_text(issue: dict[str, Any]) -> str:
    return f"{issue.get('severity', '?')} {issue.get('module', '?')}.{issue.get('operator', '?')}"


def classify(out: ToolOutput) -> Classification:
    report = read_report(out.scratch) or {}
    issues = [i for i in report.get("issues", []) if isinstance(i, dict)]
    errors = [e for e in report.get("errors", []) if isinstance(e, dict)]
    if out.returncode == 1 and not issues and (crash := python_crash(out.stdout + out.stderr)):
        return Classification(Outcome.ERROR, f"crashed (exit {out.returncode}): {crash}")
    if out.returncode == 1 or issues:
        detail = ", ".join(dict.fromkeys(_issue_text(i) for i in issues)) or "issues found"
        return Classification(Outcome.FLAGGED, shorten(detail))
    if out.returncode == 0:
        return Classification(Outcome.CLEAN)
    if errors:  # exit 2, or exit 3 when the only file in scope failed to parse
        first = errors[0]
        detail = f"{first.get('category', 'error')}: {first.get('description', '')}"
        return Classification(Outcome.ERROR, shorten(f"exit {out.returncode}: {detail}"))
    if out.returncode == 3:
        return Classification(Outcome.UNSUPPORTED, "no supported file scanned (exit 3)")
    return Classification(Outcome.ERROR, f"exit {out.returncode}: {last_line(out.stdout + out.stderr)}")


ADAPTER = Adapter(
    name="modelscan",
    # The full install: h5py for Keras .h5, tensorflow for .keras and SavedModel (without it those two
    # scanners report a missing dependency). numpy 1.26.4 sits inside modelscan's declared range
    # (>=1.24.3); with the newest numpy its .npy scanner fails (numpy.lib.format._check_version is gone).
    packages=("modelscan[h5py,tensorflow]==0.8.8", "tensorflow==2.21.0", "h5py==3.14.0", "numpy==1.26.4"),
    distribution="modelscan",
    build_command=build_command,
    classify=classify,
    notes="`modelscan -p FILE -r json -o REPORT`; exit 1 or any reported issue = flagged, 0 = clean, "
    "3 = unsupported (nothing scanned), 2 = error; exit 3 with a parse error in the report = error.",
)
