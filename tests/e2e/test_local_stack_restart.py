"""The local stack survives its own crash (finding 6 of issue 11): `local up`, `kill -9`, `local up`, and
the verdicts and objects from before are still there (moto's state is snapshotted to the state dir)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import boto3
import pytest
from modelshield.local.samples import benign_checkpoint

from tests.e2e.test_local_stack import run

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INGEST_", "SCANS_", "MODELSHIELD_"))
    }
    env["MODELSHIELD_STATE_DIR"] = str(tmp_path / "state")
    env["MODELSHIELD_SNAPSHOT_SECONDS"] = "0.5"
    env["HOME"] = str(tmp_path)
    return env


def exports(output: str) -> dict[str, str]:
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in output.splitlines()
        if line.startswith("export ")
    )


def test_verdicts_and_objects_survive_a_kill_9_of_the_local_stack(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a running stack with one scanned upload, and a snapshot taken after its verdict
    up = run("local", "up", env=cli_env)
    assert up.returncode == 0, up.stdout + up.stderr
    state_dir = Path(cli_env["MODELSHIELD_STATE_DIR"])
    pid = json.loads((state_dir / "local.json").read_text())["pid"]
    try:
        model = tmp_path / "good.pt"
        model.write_bytes(benign_checkpoint())
        first = run(
            "upload", str(model), "--key", "models/good.pt", "--wait", "--format", "json", env=cli_env
        )
        assert first.returncode == 0, first.stdout + first.stderr
        before = json.loads(first.stdout)["results"][0]
        recorded = run("verdict", "models/good.pt", "--format", "json", env=cli_env)
        vault_uri = json.loads(recorded.stdout)["vault_uri"]
        assert vault_uri, recorded.stdout
        env = exports(up.stdout)
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        time.sleep(0.5)  # the pipeline's last writes (the tag) follow the record the upload waited for
        s3.create_bucket(Bucket="restart-marker")  # outside the ingest bucket: nothing scans or removes it
        s3.put_object(Bucket="restart-marker", Key="marker.txt", Body=b"a change after the verdict")
        changed_at = time.time()
        snapshot = state_dir / "moto-state.pickle"
        deadline = time.monotonic() + 30
        while not (snapshot.is_file() and snapshot.stat().st_mtime > changed_at):
            assert time.monotonic() < deadline, "no snapshot was taken after the verdict"
            time.sleep(0.2)

        # When the daemon is killed without warning and the stack started again
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        again = run("local", "up", env=cli_env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" not in again.stdout and "restored" in again.stdout
        pid = json.loads((state_dir / "local.json").read_text())["pid"]

        # Then the verdict and the uploaded object are still there
        verdict = run("verdict", "models/good.pt", "--format", "json", env=cli_env)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        after = json.loads(verdict.stdout)
        assert (after["scan_id"], after["version_id"], after["verdict"]) == (
            before["scan_id"],
            before["version_id"],
            "ALLOWED",
        )
        env = exports(again.stdout)
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        # (the upload's plaintext was removed once its vault copy was recorded: the vault copy is the object)
        assert after["vault_uri"] == vault_uri
        location, _, version_id = vault_uri.removeprefix("s3://").partition("?versionId=")
        bucket, _, key = location.partition("/")
        stored = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
        assert stored[:3] == b"\x02\x04\x78" and len(stored) > len(model.read_bytes())
        marker = s3.get_object(Bucket="restart-marker", Key="marker.txt")["Body"].read()
        assert marker == b"a change after the verdict"

        # And the restarted stack still scans new uploads
        second = run("upload", str(model), "--key", "models/again.pt", "--wait", env=cli_env)
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        run("local", "down", env=cli_env)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
