"""`local up` must know a dead daemon from a live one (finding 5 of issue 11): after `kill -9` the daemon
can linger as a zombie, which `os.kill(pid, 0)` still reports as existing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modelshield.local import stack as local


def write_state(state_dir: Path, pid: int, endpoint: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "local.json").write_text(json.dumps({"pid": pid, "endpoint": endpoint, "env": {}}))


def test_a_zombie_daemon_is_not_a_running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a daemon that died (here: a child that exited and was never reaped, i.e. a zombie)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    with socket.socket() as listener:  # even with something answering at its old endpoint
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        write_state(tmp_path, child.pid, f"http://127.0.0.1:{listener.getsockname()[1]}")

        # When `local up` asks whether the stack runs, Then it is not running
        assert local.read_state() is None
    child.wait()


def test_a_live_process_whose_endpoint_does_not_answer_is_not_a_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a state file naming a live process (a reused pid) but an endpoint nobody listens on
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path))
    write_state(tmp_path, os.getpid(), f"http://127.0.0.1:{local.free_port()}")

    # Then the stack is not running
    assert local.read_state() is None


def test_a_live_daemon_that_answers_is_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        write_state(tmp_path, os.getpid(), f"http://127.0.0.1:{listener.getsockname()[1]}")
        state = local.read_state()
    assert state is not None and state["pid"] > 0
