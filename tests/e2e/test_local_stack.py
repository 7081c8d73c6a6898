"""End to end on the local stack (moto server + real handlers), driven exactly as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from modelshield.local.samples import benign_checkpoint, malicious_pickle

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "scan-result.schema.json").read_text())


def run(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelshield.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INGEST_", "SCANS_", "MODELSHIELD_"))
    }
    env["MODELSHIELD_STATE_DIR"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path)
    return env


def test_the_demo_shows_both_verdicts_and_a_matching_decryption(cli_env: dict[str, str]) -> None:
    # Given nothing running, When the demo runs
    result = run("demo", env=cli_env)

    # Then it succeeds and prints what the README promises
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    benign = next(line for line in out.splitlines() if line.startswith("models/demo/classifier.pt"))
    malicious = next(line for line in out.splitlines() if line.startswith("models/demo/innocent-looking.pkl"))
    assert "ALLOWED" in benign and "ENCRYPTED" in benign
    assert "BLOCKED" in malicious and "QUARANTINED" in malicious
    assert "MATCH: the vault copy decrypts to exactly the uploaded bytes" in out
    assert "MS-CODE-EXEC" in out
    # And the bulk encrypt job over the seeded repository ends with exact counts and names what it quarantined
    assert "items: 30 total, 24 succeeded, 5 failed, 1 skipped, 0 pending" in out
    assert "teams/t0/broken/checkpoint.pt  BLOCKED" in out and out.count("contrib/helper-") == 4


def test_local_up_upload_verdict_down(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Given a running local stack
    up = run("local", "up", env=cli_env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in up.stdout.splitlines()
            if line.startswith("export ")
        )
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert {"INGEST_BUCKET", "SCANS_TABLE", "VAULT_BUCKET"} <= set(exports)
        shell_lines = [line for line in up.stdout.splitlines() if line.startswith(("export ", "unset "))]
        assert run("local", "env", env=cli_env).stdout == "\n".join(shell_lines) + "\n"
        assert "unset AWS_SESSION_TOKEN" in shell_lines  # a token left by `local assume` would outlive it

        # When a benign and a malicious model are uploaded and waited for
        good, bad = tmp_path / "good.pt", tmp_path / "bad.pkl"
        good.write_bytes(benign_checkpoint())
        bad.write_bytes(malicious_pickle())
        allowed = run("upload", str(good), "--key", "models/good.pt", "--wait", env=cli_env)
        blocked = run(
            "upload", str(bad), "--key", "models/bad.pkl", "--wait", "--format", "json", env=cli_env
        )

        # Then upload --wait reports each verdict with the contract's exit codes
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "verdict: ALLOWED" in allowed.stdout
        assert blocked.returncode == 1
        report = json.loads(blocked.stdout)
        jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)
        assert report["results"][0]["verdict"] == "BLOCKED"
        assert report["summary"]["blocked"] == [report["results"][0]["path"]]
        assert {f["severity"] for f in report["results"][0]["findings"]} >= {"CRITICAL"}
        assert "1 file uploaded: 1 blocked" in blocked.stderr
        assert allowed.stdout.strip().splitlines()[-1] == "1 file uploaded: 1 allowed"

        # And verdict KEY prints the latest scan (table and JSON) from DynamoDB
        table = run("verdict", "models/bad.pkl", env=cli_env)
        assert (
            table.returncode == 1
            and "Scan of models/bad.pkl" in table.stdout
            and "MS-CODE-EXEC" in table.stdout
        )
        as_json = json.loads(run("verdict", "models/good.pt", "--format", "json", env=cli_env).stdout)
        assert as_json["verdict"] == "ALLOWED" and as_json["encryption_state"] == "ENCRYPTED"
        jsonschema.validate(as_json, SCHEMA, cls=jsonschema.Draft202012Validator)
        bad_json = json.loads(run("verdict", "models/bad.pkl", "--format", "json", env=cli_env).stdout)
        assert bad_json["findings"] == report["results"][0]["findings"]  # one shape, as stored

        # And an unknown key is a clear error, not a traceback
        missing = run("verdict", "models/nope.pt", env=cli_env)
        assert missing.returncode == 2
        assert "no scan recorded" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        down = run("local", "down", env=cli_env)
    assert down.returncode == 0 and "stopped" in down.stdout and "come back with the next" in down.stdout


def test_commands_say_clearly_when_no_stack_is_running(cli_env: dict[str, str]) -> None:
    result = run("verdict", "models/x.pt", env=cli_env)
    assert result.returncode == 2
    assert "no stack to talk to" in result.stderr and "modelshield local up" in result.stderr
    assert "Traceback" not in result.stderr


def test_upload_of_a_missing_file_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    up = run("local", "up", env=cli_env)
    assert up.returncode == 0, up.stderr
    try:
        result = run("upload", str(tmp_path / "nope.pt"), "--key", "x", env=cli_env)
        assert result.returncode == 2 and "no such file or directory" in result.stderr
    finally:
        run("local", "down", env=cli_env)
