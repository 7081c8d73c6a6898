"""Decryption access on the local stack, driven through the CLI by different IAM identities (STS roles)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from modelshield.cli import main as cli
from modelshield.cli.commands_stack import wait_for_scan
from modelshield.local.samples import benign_checkpoint
from modelshield.local.stack import LocalStack
from modelshield.models import Verdict
from modelshield.store.scans import ScanStore
from modelshield.wiring import dynamodb

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path / "state"))
    with LocalStack(quiet=True) as running:
        yield running
    os.environ.clear()
    os.environ.update(saved)


def become(stack: LocalStack, role: str, session: str) -> None:
    """Switch this process's AWS identity to an assumed role, as a real engineer or service would."""
    creds = stack.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/{role}", RoleSessionName=session
    )["Credentials"]
    os.environ["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    os.environ["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    boto3.DEFAULT_SESSION = None  # boto3 caches the first credentials it resolves; a new process would not


def test_request_approve_decrypt_with_self_approval_refused_and_everything_audited(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an allowed model in the vault
    ingest = stack.outputs["ingest_bucket"]
    body = benign_checkpoint()
    version = stack.client("s3").put_object(Bucket=ingest, Key="models/served.pt", Body=body)["VersionId"]
    record = wait_for_scan(
        ScanStore(stack.env["SCANS_TABLE"], dynamodb()), f"{ingest}/models/served.pt", version, 120
    )
    assert record.verdict is Verdict.ALLOWED
    artifact = f"{ingest}/models/served.pt"
    capsys.readouterr()

    # When an inference service asks for access
    become(stack, "InferenceService", "svc-1")
    assert (
        cli(["access", "request", artifact, "--reason", "serve it", "--hours", "2", "--format", "json"]) == 0
    )
    request_id = json.loads(capsys.readouterr().out)["requests"][0]["request_id"]

    # Then it can neither approve its own request nor decrypt before approval
    assert cli(["access", "approve", request_id]) == 2
    assert "Security Engineer" in capsys.readouterr().err
    assert cli(["access", "decrypt", request_id, "-o", str(tmp_path / "early.pt")]) == 2
    capsys.readouterr()
    assert not (tmp_path / "early.pt").exists()

    # When a Security Engineer approves it
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", request_id, "--reason", "ticket SEC-42"]) == 0
    capsys.readouterr()

    # Then the service decrypts exactly the uploaded bytes through its grant
    become(stack, "InferenceService", "svc-1")
    out = tmp_path / "served.pt"
    assert cli(["access", "decrypt", request_id, "-o", str(out)]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest()
    capsys.readouterr()

    # And every step is in the audit log, whose chain verifies
    assert cli(["audit", "list", "--artifact", artifact, "--format", "json", "--oldest-first"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    actions = [(r["action"], r["decision"]) for r in records]
    assert ("access.request", "ALLOWED") in actions
    assert ("access.approve", "DENIED") in actions  # the refused self-approval
    assert ("grant.create", "ALLOWED") in actions
    assert ("artifact.decrypt", "DENIED") in actions  # the early attempt
    assert ("artifact.decrypt", "ALLOWED") in actions
    assert cli(["audit", "verify"]) == 0


def test_a_security_engineer_cannot_approve_her_own_request(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an allowed model, and a Security Engineer who asks for access herself
    ingest = stack.outputs["ingest_bucket"]
    version = stack.client("s3").put_object(Bucket=ingest, Key="models/m.pt", Body=benign_checkpoint())[
        "VersionId"
    ]
    wait_for_scan(ScanStore(stack.env["SCANS_TABLE"], dynamodb()), f"{ingest}/models/m.pt", version, 120)
    capsys.readouterr()
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert (
        cli(
            [
                "access",
                "request",
                f"{ingest}/models/m.pt",
                "--reason",
                "debug",
                "--hours",
                "1",
                "--format",
                "json",
            ]
        )
        == 0
    )
    request_id = json.loads(capsys.readouterr().out)["requests"][0]["request_id"]

    # When she approves it, Then she is refused, with what to do instead
    assert cli(["access", "approve", request_id]) == 2
    err = capsys.readouterr().err
    assert "same principal" in err and "another Security Engineer must approve it" in err

    # And a session of the same role under another name is the same principal (session names are chosen
    # by whoever assumes the role), so it is refused too
    become(stack, "ModelShieldSecurityEngineer", "bob")
    assert cli(["access", "approve", request_id]) == 2
    assert "same principal" in capsys.readouterr().err
    assert cli(["access", "show", request_id, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"][0]["status"] == "PENDING"
