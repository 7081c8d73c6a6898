"""fickling (trailofbits/fickling): `fickling --check-safety --json-output REPORT FILE`.

Only the static safety check is used, never a mode that unpickles. Exit codes: 0 likely safe,
1 unsafe, 2 error (for instance bytes that do not parse as a pickle). The CLI reads the whole file as
one stream of stacked pickles; it does not open zip containers (PyTorch, NumPy .npz), which the
Python API (`fickling.scan_zip_archive`) does, so the CLI is what we measure and the notes say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools import Adapter, Classification, Outcome, ToolOutput, last_line, python_crash, shorten

REPORT = "fickling-report.json"
MAX_REPORT_BYTES = 32 << 20


def build_command(venv: Path, target: Path, scratch: Path) -> list[str]:
    return [
        str(venv / "bin" / "fickling"),
        "--check-safety",
        "--json-output",
        str(scratch / REPORT),
        str(target),
    ]


def read_reports(scratch: Path) -> list[dict[str, Any]]:
    """fickling appends one JSON object per stacked pickle to the same file."""
    path = scratch / REPORT
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return []
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            break
        if isinstance(value, dict):
            found.append(value)
    return found


def classify(out: ToolOutput) -> Classification:
    if out.returncode == 1:
        unsafe = [r for r in read_reports(out.scratch) if r.get("severity") != "LIKELY_SAFE"]
        crash = python_crash(out.stderr)
        if crash and not unsafe:
            return Classification(Outcome.ERROR, f"crashed (exit 1): {crash}")
        if not unsafe:
            return Classification(Outcome.FLAGGED, "unsafe")
        analysis = str(unsafe[0].get("analysis", "")).strip().splitlines() or [""]
        return Classification(Outcome.FLAGGED, shorten(f"{unsafe[0].get('severity', '?')}: {analysis[0]}"))
    if out.returncode == 0:
        return Classification(Outcome.CLEAN)
    text = out.stderr or out.stdout
    reason = next((line for line in text.splitlines() if "Error" in line), "") or last_line(text)
    return Classification(Outcome.ERROR, shorten(f"exit {out.returncode}: {reason.strip()}"))


ADAPTER = Adapter(
    name="fickling",
    # fickling 0.1.12 imports typing_extensions on Python < 3.12 without declaring it; pinned here.
    packages=("fickling==0.1.12", "typing_extensions==4.16.0"),
    distribution="fickling",
    build_command=build_command,
    classify=classify,
    notes="`fickling --check-safety --json-output REPORT FILE`; exit 1 = flagged, 0 = clean, "
    "2 = error (e.g. not a pickle: the CLI does not open zip containers); a Python traceback with exit 1 "
    "and no report = error (crash), not flagged.",
)
