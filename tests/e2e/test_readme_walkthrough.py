"""The README's walk-through, executed as written: upload → verdict → request → approve as the Security
Engineer → decrypt, on a local stack, in bash.

The fenced block under "### Walk-through:" is read from README.md and run unchanged, in a scratch
directory whose `.venv/bin/` holds this interpreter and a `modelshield` launcher for it (the README's
paths are relative to a checkout; the scratch directory keeps the checkout clean).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match, f"no bash block after {heading!r} in README.md"
    return match.group(1)


def scratch_checkout(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    launcher = bin_dir / "modelshield"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelshield.cli "$@"\n')
    launcher.chmod(0o755)
    return work


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    # Given the README's block and a clean environment (no AWS settings, a private state directory)
    script = readme_block("### Walk-through: upload")
    assert "local assume security-engineer" in script and "access approve" in script
    work = scratch_checkout(tmp_path)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INGEST_", "SCANS_", "MODELSHIELD_"))
    }
    env.update(MODELSHIELD_STATE_DIR=str(tmp_path / "state"), HOME=str(tmp_path))
    # When it runs in bash
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "modelshield.cli", "local", "down"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    # Then every command succeeded, the decrypted model equals the upload, and the audit chain is intact
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "verdict: ALLOWED" in out and "encryption: ENCRYPTED" in out
    assert "decrypted bytes match the upload" in out
    assert "access.approve" in out and "assumed-role/ModelShieldSecurityEngineer/alice" in out
    assert "OK:" in out and "chain intact" in out
    assert "stopped" in out
    assert "Traceback" not in result.stderr
