"""One adapter per scanner compared in `benchmarks/compare_scanners.py`.

An adapter knows three things about its tool: how to install it (pinned, into its own virtualenv under
`benchmarks/.venvs/<tool>/`, so no tool's dependencies can change another's behaviour), the command
line that scans one file, and how that tool's exit code and report map onto a common outcome. The
parent process runs the command and measures it; adapters never import the tools they describe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    """What one tool said about one file, in words every tool can be mapped to."""

    FLAGGED = "flagged"  # the tool reports a security issue (its CI exit code would fail the build)
    CLEAN = "clean"  # the tool scanned the file and reported nothing
    UNSUPPORTED = "unsupported"  # the tool declined the file (format or extension it does not scan)
    ERROR = "error"  # the tool failed or reported a scan error
    TIMEOUT = "timeout"  # killed after the per-file time limit
    NOT_RUN = "not run"  # the tool could not be installed or started here


@dataclass(frozen=True)
class Classification:
    outcome: Outcome
    detail: str = ""  # one short line: the issue, the error, why unsupported


@dataclass(frozen=True)
class ToolOutput:
    """What a finished tool run left behind: exit code, captured text and its scratch directory."""

    returncode: int
    stdout: str
    stderr: str
    scratch: Path  # the run's working directory, where report files (JSON) are written


@dataclass(frozen=True)
class Adapter:
    name: str
    packages: Sequence[str]  # pip requirements, pinned; empty when the tool is already installed
    distribution: str  # the distribution whose version is reported
    build_command: Callable[[Path, Path, Path], list[str]]  # (venv, target file, scratch dir) -> argv
    classify: Callable[[ToolOutput], Classification]
    environment: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""  # how outcomes are mapped, shown in the report
    venv: Path | None = None  # fixed venv (ModelShield's own); None: benchmarks/.venvs/<name>


def last_line(text: str, limit: int = 160) -> str:
    """The last non-empty line of a tool's output, shortened: a readable error detail."""
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return shorten(line.strip(), limit)
    return ""


def shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def python_crash(text: str) -> str:
    """The exception line if the tool died with an uncaught Python traceback (exit status 1), else "".

    An uncaught exception exits with status 1, the same code most of these tools use for "issues
    found": without this check a crash would be counted as a detection.
    """
    if "Traceback (most recent call last)" not in text:
        return ""
    tail = text.split("Traceback (most recent call last)")[-1]
    lines = [line for line in tail.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
    return shorten(lines[-1]) if lines else "uncaught exception"
