"""The progress bar of `modelshield upload --wait`: drawn on a terminal (a pseudo-terminal here), absent
when stderr is a pipe or with --quiet, and never on stdout, so `--format json` still parses.

Most objects here are small (the bar is drawn when each phase starts and ends, so it shows for any size);
one is the issue's 1 GiB upload, whose bar must move while the bytes go, with the CLI's memory flat.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack
from modelshield.transfer import PART_SIZE

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
    code, out, err, _ = upload_measured(env, path, key, *extra, terminal=terminal)
    return code, out, err


# The CLI under a wrapper that writes its own peak RSS (VmHWM) at exit. Not wait4's ru_maxrss: Linux
# carries the high-water mark across exec, and subprocess forks with vfork, so the child would report the
# pytest process's peak (900 MiB late in a full CI run), not the CLI's.
MEASURED_CLI = """
import atexit, os, runpy
def report():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(peak.split()[1])
atexit.register(report)
runpy.run_module("modelshield.cli", run_name="__main__", alter_sys=True)
"""


def upload_measured(
    env: dict[str, str], path: Path, key: str, *extra: str, terminal: bool
) -> tuple[int, str, str, int]:
    """As `upload`, plus the CLI process's own peak RSS in bytes (on a terminal only)."""
    args = ["upload", str(path), "--key", key, "--wait", *extra]
    if not terminal:
        argv = [sys.executable, "-m", "modelshield.cli", *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
        return done.returncode, done.stdout, done.stderr, 0
    peak_file = path.with_name(path.name + ".peak")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", MEASURED_CLI, *args],
        env={**env, "PEAK_RSS_FILE": str(peak_file)},
        stdout=subprocess.PIPE,
        stderr=slave,
    )
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
    process.wait()
    return process.returncode, out, seen.decode(errors="replace"), int(peak_file.read_text()) * 1024


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


def sparse_safetensors(path: Path, size: int) -> Path:
    """A safetensors file of one float32 tensor of `size` bytes, all zeros (sparse: no disk used for them)."""
    header = json.dumps({"weights": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}})
    header += " " * (-len(header) % 8)
    with path.open("wb") as out:
        out.write(len(header).to_bytes(8, "little") + header.encode())
        out.truncate(8 + len(header) + size)
    return path


def test_a_1_gib_upload_shows_its_progress_as_it_goes(stack_env: dict[str, str], tmp_path: Path) -> None:
    # Given a 1 GiB model and stderr on a terminal
    model = sparse_safetensors(tmp_path / "big.safetensors", 1 << 30)

    # When it is uploaded and waited for
    code, out, terminal, peak_rss = upload_measured(
        stack_env, model, "models/big.safetensors", "--format", "json", terminal=True
    )

    # Then it was released, and the bar was redrawn while the bytes went: many percentages on the way
    assert code == 0, terminal[-2000:]
    assert json.loads(out)["summary"]["verdicts"]["ALLOWED"] == 1
    uploading = [line for line in terminal.split("\r") if "uploading" in line]
    percents = [float(p) for line in uploading for p in re.findall(r"(\d+\.\d)%", line)]
    along_the_way = sorted({p for p in percents if 0 < p < 100})
    assert len(along_the_way) >= 10, f"the bar hardly moved: {along_the_way}"
    assert percents == sorted(percents), "the bar went backwards"
    assert "GiB" in terminal and "100.0%" in terminal
    # And the CLI streamed the file: its memory stayed far below the file's size, and below two parts (it
    # holds none: each part is a window onto the file)
    assert 0 < peak_rss < 2 * PART_SIZE, f"the CLI peaked at {peak_rss >> 20} MiB uploading 1 GiB"


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
