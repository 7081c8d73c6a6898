"""The progress bar of `modelshield upload --wait`: drawn on a terminal (a pseudo-terminal here), absent
when stderr is a pipe or with --quiet, and never on stdout, so `--format json` still parses.

The object is small (the bar is drawn when each phase starts and ends, so it shows for any size); the
issue's 1 GiB upload is a manual check: `modelshield upload big.bin --key big.bin --wait` in a terminal.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    saved = dict(os.environ)
    state = tmp_path_factory.mktemp("state")
    os.environ["MODELSHIELD_STATE_DIR"] = str(state)
    try:
        with LocalStack(quiet=True) as stack:
            env = {k: v for k, v in saved.items() if not k.startswith(("AWS_", "MODELSHIELD_"))}
            env.update(stack.env, MODELSHIELD_STATE_DIR=str(state))  # as `eval "$(modelshield local env)"`
            yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


def upload(env: dict[str, str], path: Path, key: str, *extra: str, terminal: bool) -> tuple[int, str, str]:
    """Run `modelshield upload` with stderr on a pseudo-terminal (or a pipe); return code, stdout, stderr."""
    argv = [sys.executable, "-m", "modelshield.cli", "upload", str(path), "--key", key, "--wait", *extra]
    if not terminal:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen.extend(chunk)
    os.close(master)
    out = process.stdout.read().decode() if process.stdout else ""
    return process.wait(timeout=180), out, seen.decode(errors="replace")


def test_upload_draws_a_bar_on_a_terminal(stack_env: dict[str, str], tmp_path: Path) -> None:
    # Given a model file and stderr on a terminal
    model = tmp_path / "model.pt"
    model.write_bytes(benign_checkpoint())
    # When it is uploaded and waited for, as JSON
    code, out, terminal = upload(stack_env, model, "models/bar.pt", "--format", "json", terminal=True)
    # Then the terminal saw a redrawn bar: file, phases, bytes of the total, percent, rate
    assert code == 0, terminal
    assert "\r" in terminal and "model.pt uploading" in terminal and "100.0%" in terminal
    assert f"/ {model.stat().st_size} B" in terminal or "KiB" in terminal
    assert "B/s" in terminal and "scanning" in terminal and "1 / 1 files" in terminal
    # And stdout is only the report
    assert json.loads(out)["summary"]["verdicts"]["ALLOWED"] == 1


def test_no_bar_into_a_pipe_or_with_quiet(stack_env: dict[str, str], tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(benign_checkpoint())
    code, out, err = upload(stack_env, model, "models/pipe.pt", terminal=False)
    assert code == 0 and "\r" not in err and "uploading" not in err and "\r" not in out
    code, _, terminal = upload(stack_env, model, "models/quiet.pt", "--quiet", terminal=True)
    assert code == 0 and "\r" not in terminal and "uploading" not in terminal


def test_verdict_events_reach_the_local_bus(stack_env: dict[str, str], tmp_path: Path) -> None:
    # Given a malicious pickle uploaded and blocked
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(malicious_pickle())
    code, _, _ = upload(stack_env, bad, "models/bad.pkl", "--quiet", terminal=False)
    assert code == 1
    # When the local stack's verdict events are listed (they arrive asynchronously, through SQS)
    deadline = time.monotonic() + 30
    while True:
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelshield.cli",
                "local",
                "events",
                "--verdict",
                "BLOCKED",
                "--format",
                "json",
            ],
            env=stack_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        events = [e for e in json.loads(listed.stdout)["events"] if e["detail"]["key"] == "models/bad.pkl"]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Then the BLOCKED verdict was announced with the artifact, group and failing rules
    (event,) = events
    assert event["source"] == "modelshield" and event["detail-type"] == "ModelShield Verdict"
    assert event["detail"]["verdict"] == "BLOCKED" and "MS-CODE-EXEC" in event["detail"]["failing_rules"]
    assert event["detail"]["artifact_id"].endswith("/models/bad.pkl") and event["detail"]["group"]
