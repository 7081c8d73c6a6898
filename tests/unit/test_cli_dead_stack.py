"""Every CLI command against a dead stack: the exports of a stack that was stopped (`local down`) still
set, nothing listening at AWS_ENDPOINT_URL. Each command must return within 5 s with one line on
stderr that says "no stack" (the same wording everywhere), never a traceback; `audit verify` exits with
its "could not check" code, not the tampered one.

The commands are discovered from the parser, so a new command fails here until it is listed below with
the arguments it needs (or marked as offline / starting a stack).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modelshield.cli import build_parser, main
from modelshield.cli.commands_audit import COULD_NOT_CHECK

# argv after the command path, for commands that need arguments (paths are created by the test)
ARGS: dict[str, list[str]] = {
    "scan": ["s3://ingest-bucket/models/model.pt"],
    "encrypt": ["{file}", "-o", "{tmp}/out.enc", "--key-id", "alias/modelshield-local-vault"],
    "decrypt": ["s3://vault-bucket/models/model.pt", "-o", "{tmp}/out.pt"],
    "groups show": ["default"],
    "groups apply": ["{groups}"],
    "upload": ["{file}", "--key", "models/model.pt", "--wait"],
    "verdict": ["models/model.pt"],
    "rescan": ["--all", "--wait"],
    "access request": ["ingest-bucket/models/model.pt", "--reason", "r", "--hours", "1"],
    "access approve": ["req-1"],
    "access deny": ["req-1"],
    "access show": ["req-1"],
    "access decrypt": ["req-1", "-o", "{tmp}/out.pt"],
    "local assume": ["security-engineer"],
    "jobs create": ["--source", "s3://ingest-bucket/models/", "--operation", "scan"],
    "jobs status": ["job-1"],
    "jobs errors": ["job-1"],
    "jobs cancel": ["job-1"],
    "jobs retry": ["job-1"],
}
# Commands that talk to no stack: they must still work (or fail for their own reasons) offline.
# (`dashboard` prints the dashboard's URL from the local stack's state or DASHBOARD_URL: no AWS call.)
OFFLINE = {
    "explain",
    "groups validate",
    "local status",
    "local down",
    "local env",
    "local events",
    "dashboard",
}
STARTS_A_STACK = {"local up", "demo"}  # would start what this test says is not there


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(leaf_commands(sub, (*prefix, name)))
    return found or [" ".join(prefix)]


def dead_endpoint() -> str:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def dead_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = dead_endpoint()
    exports = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "modelshield-local",
        "AWS_SECRET_ACCESS_KEY": "modelshield-local",
        "INGEST_BUCKET": "ingest-bucket",
        "VAULT_BUCKET": "vault-bucket",
        "SCANS_TABLE": "scans",
        "ARTIFACTS_TABLE": "artifacts",
        "GROUPS_TABLE": "groups",
        "AUDIT_TABLE": "audit",
        "ACCESS_TABLE": "access",
        "IDEMPOTENCY_TABLE": "idempotency",
        "KMS_KEY_ID": "alias/modelshield-local-vault",
        "SCAN_QUEUE_URL": f"{endpoint}/123456789012/scan-queue",
        "RESCAN_QUEUE_URL": f"{endpoint}/123456789012/rescan-queue",
        "SCAN_DEAD_LETTER_QUEUE_URL": f"{endpoint}/123456789012/scan-dlq",
        "MODELSHIELD_STATE_DIR": str(tmp_path / "state"),
        "MODELSHIELD_API_URL": endpoint,  # the local stack's API (approvals go through it): gone too
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MODELSHIELD_TARGET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    return endpoint


def argv_for(command: str, tmp_path: Path) -> list[str]:
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x80\x02}q\x00.")
    groups = tmp_path / "groups.yaml"
    groups.write_text("groups:\n  - name: g\n    kms_key_id: alias/other\n")
    fill = {"file": str(model), "tmp": str(tmp_path), "groups": str(groups)}
    return [*command.split(), *(a.format(**fill) for a in ARGS.get(command, []))]


def test_every_command_is_covered() -> None:
    commands = set(leaf_commands(build_parser()))
    unknown = commands - set(ARGS) - OFFLINE - STARTS_A_STACK
    talking_without_args = {
        "groups list",
        "keys status",
        "keys rotate",
        "access list",
        "audit list",
        "audit verify",
        "jobs list",
        "dlq list",
        "dlq redrive",
    }
    assert unknown <= talking_without_args, (
        f"add these commands to ARGS/OFFLINE: {unknown - talking_without_args}"
    )


@pytest.mark.parametrize(
    "command", sorted(set(leaf_commands(build_parser())) - OFFLINE - STARTS_A_STACK), ids=str
)
def test_a_dead_stack_is_one_fast_no_stack_line(
    command: str, dead_stack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the exports of a stack that is gone
    argv = argv_for(command, tmp_path)
    # When the command runs
    started = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - started
    _, err = capsys.readouterr()
    # Then it fails within 5 s with one line naming "no stack", and no traceback
    lines = [line for line in err.splitlines() if line.strip()]
    assert elapsed < 5, f"{command} took {elapsed:.1f}s"
    assert len(lines) == 1, f"{command}: {err!r}"
    assert "no stack" in lines[0], f"{command}: {lines[0]}"
    assert "Traceback" not in err
    if command == "local assume":
        assert code == 2
    else:
        assert dead_stack in lines[0] or "no stack to talk to" in lines[0], f"{command}: {lines[0]}"
    # And `audit verify` says it could not check, with its own exit code (tampered is 1)
    if command == "audit verify":
        assert code == COULD_NOT_CHECK == 3 and lines[0].startswith("COULD NOT CHECK: no stack")
    else:
        assert code == 2, f"{command} exited {code}"


def test_offline_commands_say_plainly_that_no_local_stack_runs(
    dead_stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "status"]) == 1
    assert "not running" in capsys.readouterr().out
    assert main(["local", "env"]) == 2
    assert capsys.readouterr().err.startswith("modelshield: error: no stack")
    assert main(["local", "down"]) == 0


def test_the_process_prints_no_traceback_either(dead_stack: str) -> None:
    # The same through a real process: the interpreter would print a traceback for anything uncaught.
    result = subprocess.run(
        [sys.executable, "-m", "modelshield.cli", "verdict", "models/model.pt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"no stack answers at {dead_stack}" in result.stderr
