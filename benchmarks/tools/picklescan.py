"""picklescan (mmaitre314/picklescan): `picklescan --path FILE`.

Exit codes: 0 no dangerous globals, 1 dangerous globals found, 2 scan error. A scan error can come with
dangerous globals already found (a truncated or malformed pickle); the summary then still counts them,
and we call that flagged, because the user is shown the danger. Bytes that do not parse as a pickle are
reported as a WARNING with exit 0: that is what a CI gate sees, so it maps to clean (fail open).
"""

from __future__ import annotations

import re
from pathlib import Path

from tools import Adapter, Classification, Outcome, ToolOutput, last_line, python_crash, shorten

_COUNT = re.compile(r"^(Scanned files|Infected files|Suspicious globals|Dangerous globals): (\d+)$", re.M)
_FOUND = re.compile(r"^.*?: (dangerous|suspicious|innocuous) import '([^']*)' FOUND", re.M)


def build_command(venv: Path, target: Path, scratch: Path) -> list[str]:
    return [str(venv / "bin" / "picklescan"), "--path", str(target)]


def summary(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in _COUNT.findall(text)}


def classify(out: ToolOutput) -> Classification:
    text = out.stdout + "\n" + out.stderr
    counts = summary(text)
    dangerous = [f"{kind} {name}" for kind, name in _FOUND.findall(text) if kind == "dangerous"]
    suspicious = counts.get("Suspicious globals", 0)
    if out.returncode == 1 and counts.get("Dangerous globals", 0) == 0 and (crash := python_crash(text)):
        return Classification(Outcome.ERROR, f"crashed (exit {out.returncode}): {crash}")
    if out.returncode == 1 or counts.get("Dangerous globals", 0) > 0:
        detail = ", ".join(dict.fromkeys(dangerous)) or f"{counts.get('Dangerous globals', '?')} dangerous"
        if out.returncode == 2:
            detail += " (exit 2: parse error after the import)"
        return Classification(Outcome.FLAGGED, shorten(detail))
    if out.returncode == 0:
        if "could not parse" in text:
            return Classification(Outcome.CLEAN, "not parsed as a pickle; exit 0")
        note = f"{suspicious} suspicious global(s), exit 0" if suspicious else ""
        return Classification(Outcome.CLEAN, note)
    return Classification(Outcome.ERROR, f"exit {out.returncode}: {last_line(text)}")


ADAPTER = Adapter(
    name="picklescan",
    # picklescan imports numpy to read .npy files but does not declare it; pinned like the fixtures.
    packages=("picklescan==1.0.5", "numpy==2.4.6"),
    distribution="picklescan",
    build_command=build_command,
    classify=classify,
    notes="`picklescan --path FILE`; exit 1 (or dangerous globals in the summary) = flagged, 0 = clean, "
    "2 = error. Unparseable bytes are a warning with exit 0 (clean).",
)
