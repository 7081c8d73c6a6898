"""Controls that hold against a principal with ordinary rights, shown on the local stack.

moto enforces no IAM, bucket or key policy, so these run through ModelShield's own code paths: what they
show is that ModelShield itself refuses (and records) what the template's policies refuse in AWS.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from modelshield import wiring
from modelshield.audit import AuditAction, AuditQuery
from modelshield.cli import main as cli
from modelshield.cli.commands_stack import wait_for_scan
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalStack
from modelshield.models import EncryptionState, Verdict
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.audit import DynamoAuditStore
from modelshield.store.scans import ScanStore

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
    """Switch this process's AWS identity to an assumed role (real STS credentials from moto)."""
    creds = stack.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/{role}", RoleSessionName=session
    )["Credentials"]
    os.environ["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    os.environ["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    boto3.DEFAULT_SESSION = None


def upload(stack: LocalStack, key: str, body: bytes, **extra: object) -> tuple[str, str]:
    """Upload to the ingest bucket and wait for its verdict; (artifact id, version id)."""
    ingest = stack.outputs["ingest_bucket"]
    version = stack.client("s3").put_object(Bucket=ingest, Key=key, Body=body, **extra)["VersionId"]
    record = wait_for_scan(
        ScanStore(stack.env["SCANS_TABLE"], wiring.dynamodb()), f"{ingest}/{key}", version, 120
    )
    assert record.verdict is not None
    return f"{ingest}/{key}", version


def refusals(artifact_id: str) -> list[tuple[str, str]]:
    records = wiring.audit_log().list(AuditQuery(artifact_id=artifact_id, newest_first=False, limit=1000))
    return [(r.action, r.reason) for r in records if r.decision.value == "DENIED"]


def request_id_of(capsys: pytest.CaptureFixture[str]) -> str:
    return str(json.loads(capsys.readouterr().out)["requests"][0]["request_id"])


def _wait_for_anchor(seq: int, timeout: float = 60) -> None:
    anchors = wiring.anchor_store()
    assert anchors is not None, "the local stack must configure AUDIT_ANCHOR_BUCKET"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = anchors.latest()
        if latest is not None and latest.seq >= seq:
            return
        time.sleep(0.2)
    raise AssertionError(f"no anchor for record {seq} within {timeout}s")


def test_a_rewritten_audit_tail_is_detected_with_no_manual_anchor(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a few audit records, anchored automatically by the AuditAnchorFunction (stream trigger)
    log = wiring.audit_log()
    records = [
        log.append(AuditAction.GROUP_CHANGE, principal="arn:aws:iam::123456789012:role/Ops", detail={"i": i})
        for i in range(4)
    ]
    _wait_for_anchor(records[-1].seq)
    capsys.readouterr()
    assert cli(["audit", "verify"]) == 0
    assert f"automatic anchor {records[-1].seq}" in capsys.readouterr().out

    # When a chain writer deletes the last record and rolls the head back, consistently
    store = DynamoAuditStore(stack.env["AUDIT_TABLE"], wiring.dynamodb())
    store.table.delete_item(Key={"pk": "chain", "seq": records[-1].seq})
    store.table.put_item(
        Item={"pk": "head", "seq": 0, "head_seq": records[-2].seq, "head_hash": records[-2].hash}
    )
    assert log.verify().ok  # the chain alone can no longer tell

    # Then a plain `audit verify` (no --anchor) reports it, from the latest automatic anchor
    assert cli(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and f"anchored record {records[-1].seq} is missing" in out
    # And the anchor function, woken by the forged head, refused to re-anchor the shorter chain
    anchors = wiring.anchor_store()
    assert anchors is not None and anchors.latest().seq == records[-1].seq


def test_a_forged_artifacts_row_does_not_release_a_blocked_model(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a malicious pickle, blocked and quarantined
    artifact, version = upload(stack, "models/evil.pkl", malicious_pickle())
    artifacts = ArtifactStore(stack.env["ARTIFACTS_TABLE"], wiring.dynamodb())
    row = artifacts.get(artifact, version)
    assert row is not None and row.verdict is Verdict.BLOCKED
    # When someone with write access to the table and the vault copies the quarantined ciphertext to a
    # consumer path and flips the row to ALLOWED / ENCRYPTED there
    vault = stack.outputs["vault_bucket"]
    copied = stack.client("s3").copy_object(
        Bucket=vault, Key="models/evil.pkl", CopySource={"Bucket": vault, "Key": str(row.vault_key)}
    )
    forged = {
        "verdict": Verdict.ALLOWED,
        "encryption_state": EncryptionState.ENCRYPTED,
        "vault_key": "models/evil.pkl",
        "vault_version_id": copied["VersionId"],
    }
    artifacts.save(row.model_copy(update=forged), expected_revision=row.revision)
    capsys.readouterr()
    # Then a consumer's request is refused, saying which sources disagree, and the refusal is audited
    become(stack, "InferenceService", "svc-1")
    args = ["access", "request", artifact, "--version", version, "--reason", "serve", "--hours", "1"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "the artifacts row says ALLOWED but the latest scan record" in err and "BLOCKED" in err
    assert any(a == "access.request" and "disagree" in why for a, why in refusals(artifact))


@pytest.mark.parametrize("seal", ["none", "copied"])
def test_a_forged_scan_record_does_not_release_a_blocked_model(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], seal: str
) -> None:
    # Given a malicious pickle, blocked, and an attacker with write access to both tables and the vault:
    # the quarantined ciphertext copied to a consumer path and the row flipped, as above ...
    artifact, version = upload(stack, "models/evil.pkl", malicious_pickle())
    artifacts = ArtifactStore(stack.env["ARTIFACTS_TABLE"], wiring.dynamodb())
    row = artifacts.get(artifact, version)
    assert row is not None and row.verdict is Verdict.BLOCKED
    vault = stack.outputs["vault_bucket"]
    copied = stack.client("s3").copy_object(
        Bucket=vault, Key="models/evil.pkl", CopySource={"Bucket": vault, "Key": str(row.vault_key)}
    )
    forged_row = {
        "verdict": Verdict.ALLOWED,
        "encryption_state": EncryptionState.ENCRYPTED,
        "vault_key": "models/evil.pkl",
        "vault_version_id": copied["VersionId"],
    }
    artifacts.save(row.model_copy(update=forged_row), expected_revision=row.revision)
    # ... and a newer scan record saying ALLOWED, put straight into the table (no seal, or the real one's)
    scans = ScanStore(stack.env["SCANS_TABLE"], wiring.dynamodb())
    real = scans.latest(artifact, version)
    assert real is not None and real.mac  # the genuine record is sealed
    later = real.scanned_at.replace(year=real.scanned_at.year + 1)
    forged = real.model_copy(
        update={
            "verdict": Verdict.ALLOWED,
            "scanned_at": later,
            "scan_ref": f"{later.isoformat()}#{version}#forged",
            "scan_id": "forged",
            "vault_uri": f"s3://{vault}/models/evil.pkl?versionId={copied['VersionId']}",
            "mac": real.mac if seal == "copied" else None,
        }
    )
    scans.append(forged)  # this store has no sealer: it writes what it is given, as PutItem would
    capsys.readouterr()
    # Then a consumer's request is refused because the record is not ModelShield's, and that is audited
    become(stack, "InferenceService", "svc-1")
    args = ["access", "request", artifact, "--version", version, "--reason", "serve", "--hours", "1"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    expected = "carries no seal" if seal == "none" else "does not match its seal"
    assert expected in err, err
    assert any(a == "access.request" and "seal" in why for a, why in refusals(artifact))


def test_a_quarantine_copy_is_never_decrypted_for_a_consumer(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an allowed model, requested by a consumer
    artifact, version = upload(stack, "models/good.pt", benign_checkpoint())
    quarantined, qversion = upload(stack, "models/evil2.pkl", malicious_pickle())
    artifacts = ArtifactStore(stack.env["ARTIFACTS_TABLE"], wiring.dynamodb())
    evil = artifacts.get(quarantined, qversion)
    assert evil is not None and str(evil.vault_key).startswith("quarantine/")
    become(stack, "InferenceService", "svc-1")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "serve", "--hours", "1", "--format", "json"]) == 0
    request_id = request_id_of(capsys)
    # When the good model's row is pointed at the quarantine copy of the malicious one
    row = artifacts.get(artifact, version)
    assert row is not None
    artifacts.save(
        row.model_copy(update={"vault_key": evil.vault_key, "vault_version_id": evil.vault_version_id}),
        expected_revision=row.revision,
    )
    # Then a Security Engineer's approval is refused (no grant is created), and audited
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", request_id]) == 2
    assert "quarantine copy" in capsys.readouterr().err
    assert any(a == "access.approve" and "quarantine" in why for a, why in refusals(artifact))


def test_a_wildcard_security_engineer_in_the_callers_environment_grants_nothing(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a consumer's pending request
    artifact, _ = upload(stack, "models/served.pt", benign_checkpoint())
    become(stack, "InferenceService", "svc-1")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "serve", "--hours", "1", "--format", "json"]) == 0
    request_id = request_id_of(capsys)
    # When another non-engineer sets SECURITY_ENGINEER_ROLE='*' in their own environment and approves
    become(stack, "DataScientist", "mallory")
    os.environ["SECURITY_ENGINEER_ROLE"] = "*"
    try:
        assert cli(["access", "approve", request_id]) == 2
    finally:
        del os.environ["SECURITY_ENGINEER_ROLE"]
    # Then the stack's own setting decides: refused with what the stack allows, and audited
    err = capsys.readouterr().err
    assert "is not a Security Engineer" in err and "role/ModelShieldSecurityEngineer" in err
    assert ("access.approve", "not a Security Engineer") in refusals(artifact)
    # And the consumer still cannot decrypt
    become(stack, "InferenceService", "svc-1")
    assert cli(["access", "decrypt", request_id, "-o", str(tmp_path / "out.pt")]) == 2
    assert not (tmp_path / "out.pt").exists()


def test_one_person_with_a_consumer_and_an_engineer_role_cannot_approve_their_own_request(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact, _ = upload(stack, "models/mine.pt", benign_checkpoint())
    # Given alice asks for access under a consumer role
    become(stack, "InferenceService", "alice")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "debug", "--hours", "1", "--format", "json"]) == 0
    request_id = request_id_of(capsys)
    # When alice approves it under the Security Engineer role
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", request_id]) == 2
    # Then she is refused as the same person, and the refusal is audited
    assert "same person" in capsys.readouterr().err
    assert ("access.approve", "self-approval by the same person") in refusals(artifact)


def _versions_left(stack: LocalStack, key: str, timeout: float = 30) -> list[dict]:
    """The ingest bucket's versions of `key`, once the pipeline has had time to remove them."""
    s3 = stack.client("s3")
    deadline = time.monotonic() + timeout
    while True:
        left = s3.list_object_versions(Bucket=stack.outputs["ingest_bucket"], Prefix=key).get("Versions", [])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _wait_for_rescan(artifact: str, version: str, timeout: float = 120):
    scans = ScanStore(os.environ["SCANS_TABLE"], wiring.dynamodb())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = scans.latest(artifact, version)
        if latest is not None and latest.trigger == "rescan":
            return latest
        time.sleep(0.3)
    raise AssertionError(f"no rescan of {artifact} within {timeout}s")


def test_no_plaintext_remains_yet_approved_decrypts_and_rescans_still_work(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelshield.policy.groups import load_groups
    from modelshield.store.groups import GroupStore

    ingest = stack.outputs["ingest_bucket"]
    groups = GroupStore(stack.env["GROUPS_TABLE"], wiring.dynamodb())
    strict = f"""groups:
  - name: Partner-S3-Audit
    sources: [{{type: s3, bucket: "{ingest}", prefix: partner/}}]
    rules:
      MS-FORMAT-SAFE: {{blocking: true, settings: {{pickle_based: deny}}}}
"""
    groups.put(load_groups(strict)[0])
    # Given an allowed model and a partner model its group blocks, both scanned
    body = benign_checkpoint("served")
    artifact, _ = upload(stack, "models/served.pt", body)
    partner, pversion = upload(stack, "partner/acme/model.pt", benign_checkpoint("partner"))
    # Then no plaintext version of either upload remains in the ingest bucket
    assert _versions_left(stack, "models/served.pt") == []
    assert _versions_left(stack, "partner/acme/model.pt") == []
    removed = wiring.audit_log().list(AuditQuery(artifact_id=artifact, action="ingest.plaintext-removed"))
    assert len(removed) == 1 and removed[0].decision.value == "ALLOWED"

    # And an approved consumer still decrypts exactly the uploaded bytes, from the vault
    become(stack, "InferenceService", "svc-1")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "serve", "--hours", "1", "--format", "json"]) == 0
    request_id = request_id_of(capsys)
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["access", "approve", request_id, "--reason", "SEC-1"]) == 0
    become(stack, "InferenceService", "svc-1")
    out = tmp_path / "served.pt"
    assert cli(["access", "decrypt", request_id, "-o", str(out)]) == 0
    assert out.read_bytes() == body

    # And when the partner group's rule is relaxed, a rescan (from the quarantine copy) gives a new verdict
    groups.put(load_groups(strict.replace("blocking: true", "blocking: false"))[0])
    become(stack, "ModelShieldSecurityEngineer", "alice")
    assert cli(["rescan", "--group", "Partner-S3-Audit"]) == 0
    rescan = _wait_for_rescan(partner, pversion)
    assert rescan.verdict is Verdict.ALLOWED_WITH_WARNINGS
    state = ArtifactStore(stack.env["ARTIFACTS_TABLE"], wiring.dynamodb()).get(partner, pversion)
    assert state is not None and state.encryption_state is EncryptionState.ENCRYPTED
    assert state.vault_key == "partner/acme/model.pt"


def test_an_upload_carrying_a_forged_verdict_tag_is_recorded_and_still_refused(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a malicious pickle uploaded with a verdict tag only ModelShield may set
    artifact, version = upload(
        stack, "models/tagged.pkl", malicious_pickle(), Tagging="modelshield-verdict=ALLOWED"
    )
    # Then it is still BLOCKED, and the forged tag is an audit record saying what happened
    scan = ScanStore(stack.env["SCANS_TABLE"], wiring.dynamodb()).latest(artifact, version)
    assert scan is not None and scan.verdict is Verdict.BLOCKED
    forged = wiring.audit_log().list(AuditQuery(artifact_id=artifact, action="ingest.forged-tags"))
    assert (
        forged
        and forged[0].decision.value == "DENIED"
        and forged[0].detail["tags"] == {"modelshield-verdict": "ALLOWED"}
    )
    assert "ModelShield's own tags" in forged[0].reason
    # And a consumer's request is refused with the verdict, and audited
    become(stack, "InferenceService", "svc-1")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "serve", "--hours", "1"]) == 2
    assert "its verdict is BLOCKED" in capsys.readouterr().err
    assert any(a == "access.request" and "BLOCKED" in why for a, why in refusals(artifact))


def test_approvals_go_through_the_api_which_takes_the_approver_from_the_signature(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.error
    import urllib.request

    from modelshield.store.access import DynamoAccessStore

    # Given a consumer's pending request
    artifact, _ = upload(stack, "models/api.pt", benign_checkpoint("api"))
    become(stack, "InferenceService", "svc-1")
    capsys.readouterr()
    assert cli(["access", "request", artifact, "--reason", "serve", "--hours", "1", "--format", "json"]) == 0
    request_id = request_id_of(capsys)
    # Then the requester on record is the session that signed the request, and `--mine` finds it
    svc = "arn:aws:sts::123456789012:assumed-role/InferenceService/svc-1"
    assert cli(["access", "show", request_id, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"][0]["requester"] == svc
    assert cli(["access", "list", "--mine", "--format", "json"]) == 0
    mine = json.loads(capsys.readouterr().out)["requests"]
    assert request_id in [r["request_id"] for r in mine] and {r["requester"] for r in mine} == {svc}
    url = f"{os.environ['MODELSHIELD_API_URL']}/access/requests/{request_id}/approve"
    # When someone posts an approval without a SigV4 signature, claiming to be the engineer in the body
    claim = json.dumps({"reason": "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/a"})
    unsigned = urllib.request.Request(url, data=claim.encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=10)
    # Then the API refuses it before the function runs, and the request stays pending
    assert refused.value.code == 403
    assert "Missing Authentication Token" in json.loads(refused.value.read())["message"]
    access = DynamoAccessStore(stack.env["ACCESS_TABLE"], wiring.dynamodb())
    assert access.get(request_id).status.value == "PENDING"
    # And without the API's URL the CLI says where approvals go instead of writing the tables itself
    become(stack, "ModelShieldSecurityEngineer", "alice")
    saved_url = os.environ.pop("MODELSHIELD_API_URL")
    try:
        assert cli(["access", "approve", request_id]) == 2
        assert "MODELSHIELD_API_URL is not set" in capsys.readouterr().err
        assert cli(["access", "request", artifact, "--reason", "r", "--hours", "1"]) == 2
    finally:
        os.environ["MODELSHIELD_API_URL"] = saved_url
    assert "MODELSHIELD_API_URL is not set" in capsys.readouterr().err
    # When the engineer approves through the CLI (signed with her session's credentials)
    assert cli(["access", "approve", request_id, "--reason", "SEC-7", "--format", "json"]) == 0
    # Then the approver on record is the session the signature proved, in the table and the audit chain
    approved = json.loads(capsys.readouterr().out)["requests"][0]
    session = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
    assert approved["status"] == "APPROVED" and approved["decided_by"] == session
    approvals = wiring.audit_log().list(AuditQuery(artifact_id=artifact, action="access.approve"))
    assert [(r.principal, r.decision.value) for r in approvals] == [(session, "ALLOWED")]
