"""metrics.json against the tables, under moto: the whole template, real handlers, counters from streams.

The expected numbers are computed here by scanning the tables directly (a different path from the
counters the dashboard reads), so a counter that drifts from the data fails these tests.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from modelshield import config, wiring
from modelshield.access import decrypt_with_grant
from modelshield.audit import AuditLog
from modelshield.errors import AccessDenied
from modelshield.local.dashboard_server import alb_event
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.local.stack import LocalContext, load_handler
from modelshield.local.streams import StreamPump
from modelshield.store.audit import DynamoAuditStore

from tests.builders import MotoStack
from tests.dashboard_truth import assert_matches_tables, expected_from_tables

ACCOUNT = "123456789012"
CONSUMER = f"arn:aws:sts::{ACCOUNT}:assumed-role/InferenceService/svc-1"
ALICE = f"arn:aws:sts::{ACCOUNT}:assumed-role/ModelShieldSecurityEngineer/alice"


class Dash:
    """The stack with MetricsFunction fed from the streams and DashboardFunction answering ALB events."""

    def __init__(self, stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stack = stack
        functions = stack.provisioned.functions
        for spec in functions.values():
            for name, value in spec.environment.items():
                monkeypatch.setenv(name, value)
                stack.env[name] = value
        self.env = dict(functions["DashboardFunction"].environment)
        self.metrics_handler = load_handler(functions["MetricsFunction"])
        self.dashboard_handler = load_handler(functions["DashboardFunction"])
        arns = [stack.provisioned.stream_arns[t] for t, _ in functions["MetricsFunction"].stream_sources]
        self.stream_arns = arns
        self.pump = self.new_pump()

    def new_pump(self) -> StreamPump:
        def deliver(event: dict[str, Any]) -> dict[str, Any]:
            return self.metrics_handler(event, LocalContext("MetricsFunction", 512, 60))

        return StreamPump(boto3.client("dynamodbstreams"), self.stream_arns, deliver)

    def get(self, target: str) -> tuple[int, dict[str, str], str]:
        response = self.dashboard_handler(
            alb_event("GET", target), LocalContext("DashboardFunction", 512, 15)
        )
        return response["statusCode"], response.get("headers", {}), response["body"]

    def json(self, target: str) -> dict[str, Any]:
        status, _, body = self.get(target)
        assert status == 200, body
        return json.loads(body)


@pytest.fixture
def dash(moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> Dash:
    return Dash(moto_stack, monkeypatch)


def run_session(dash: Dash, tmp_path: Path) -> dict[str, str]:
    """Uploads allowed and blocked, an approved decryption and a denied one."""
    stack = dash.stack
    benign, bad = benign_checkpoint("served"), malicious_pickle()
    stack.put("models/served.pt", benign)
    stack.put("models/evil.pkl", bad)
    stack.deliver_queued()
    artifact = f"{stack.ingest}/models/served.pt"
    service = wiring.access_service(s3=stack.s3)
    approved = service.request(artifact, requester=CONSUMER, reason="serve v2", hours=2)
    service.approve(approved.request_id, approver=ALICE, reason="SEC-1")
    digest = decrypt_with_grant(
        service, approved.request_id, principal=CONSUMER, dest=tmp_path / "out.pt", s3=stack.s3
    )
    assert digest == hashlib.sha256(benign).hexdigest()
    denied = service.request(artifact, requester=CONSUMER, reason="again", hours=1)
    service.deny(denied.request_id, approver=ALICE, reason="not needed")
    with pytest.raises(AccessDenied):
        decrypt_with_grant(
            service, denied.request_id, principal=CONSUMER, dest=tmp_path / "no.pt", s3=stack.s3
        )
    return {"artifact": artifact, "approved": approved.request_id, "denied": denied.request_id}


def test_metrics_json_equals_what_the_tables_hold(dash: Dash, tmp_path: Path) -> None:
    # Given a session: an allowed and a blocked upload, an approved and a denied decryption
    run_session(dash, tmp_path)

    # When the streams have been folded into the counters and metrics.json is read
    assert dash.pump.pump_until_idle() > 0
    document = dash.json("/metrics.json")

    # Then every number equals what full scans of the tables say
    expected = expected_from_tables(dash.stack.table, datetime.now(UTC))
    assert_matches_tables(document, expected)
    assert expected["encrypted"]["objects"] == 1 and expected["quarantined"]["objects"] == 1
    assert expected["decrypt_denied_24h"] == 1 and expected["decrypt_allowed_24h"] == 1
    assert expected["blocked_uploads_24h"] == 1
    # And the capacity history ends at today's totals, the key is listed with its rotation status
    last = document["capacity_history"][-1]
    assert last["encrypted_bytes"] == expected["encrypted"]["bytes"]
    assert last["quarantined_bytes"] == expected["quarantined"]["bytes"]
    keys = {k["key_arn"]: k for k in document["keys"]}
    in_use = [k for k in keys.values() if k["artifacts"]]
    assert sum(k["artifacts"] for k in in_use) == 2 and all(k["rotation_enabled"] for k in in_use)
    assert document["keys_overdue"] == 0
    assert sum(a["objects"] for a in document["data_key_ages"]) == 2
    assert document["verdicts_by_group"]["default"]["BLOCKED"] == 1
    assert any(r["rule"] == "MS-CODE-EXEC" and r["blocking"] for r in document["rule_failures"])
    assert document["jobs"] == []
    assert set(document) >= {"generated_at", "encrypted", "quarantined", "plaintext", "verdicts",
                             "decrypt_attempts", "keys", "audit_chain", "jobs",
                             "capacity_history"}  # fmt: skip


def test_replayed_stream_records_are_counted_once(dash: Dash, tmp_path: Path) -> None:
    # Given a session whose records were all applied
    run_session(dash, tmp_path)
    dash.pump.pump_until_idle()
    before = dash.json("/metrics.json")

    # When every stream record is delivered again from the start (as a retried batch would be)
    replayed = dash.new_pump().pump_until_idle()

    # Then nothing changes
    assert replayed > 0
    after = dash.json("/metrics.json")
    for key in ("encrypted", "quarantined", "plaintext", "verdicts", "decrypt_attempts", "audit_chain"):
        assert after[key] == before[key], key


def test_an_edited_audit_record_shows_the_chain_broken(dash: Dash, tmp_path: Path) -> None:
    # Given a session, counted, with the chain intact
    run_session(dash, tmp_path)
    dash.pump.pump_until_idle()
    assert dash.json("/metrics.json")["audit_chain"]["intact"] is True

    # When someone rewrites an old audit record in the table
    table = dash.stack.table("AUDIT_TABLE")
    table.update_item(Key={"pk": "chain", "seq": 2}, UpdateExpression="SET reason = :r",
                      ExpressionAttributeValues={":r": "nothing to see"})  # fmt: skip
    dash.pump.pump_until_idle()

    # Then the page reports it, as the full verify does
    chain = dash.json("/metrics.json")["audit_chain"]
    assert chain["intact"] is False and chain["problems"] >= 1
    assert any("record 2" in p for p in chain["recent_problems"])
    audit = DynamoAuditStore(dash.stack.env["AUDIT_TABLE"], boto3.resource("dynamodb"))
    assert AuditLog(audit).verify().ok is False


def test_records_not_yet_streamed_are_checked_from_the_table(dash: Dash, tmp_path: Path) -> None:
    # Given a session whose audit records the stream has not delivered yet
    run_session(dash, tmp_path)

    # When metrics.json is read before any counter update
    chain = dash.json("/metrics.json")["audit_chain"]

    # Then the chain tail is verified directly: every record counted, intact
    report = AuditLog(DynamoAuditStore(dash.stack.env["AUDIT_TABLE"], boto3.resource("dynamodb"))).verify()
    assert chain["records"] == report.checked > 0 and chain["intact"] is True and chain["pending"] == 0


def test_attempts_json_filters_by_outcome_principal_and_artifact_newest_first(
    dash: Dash, tmp_path: Path
) -> None:
    # Given a session with an approved and a denied decryption
    ids = run_session(dash, tmp_path)

    # When the attempts log is read unfiltered
    everything = dash.json("/attempts.json")["attempts"]

    # Then it lists every step newest first, with words, principals and the approver
    assert [a["seq"] for a in everything] == sorted((a["seq"] for a in everything), reverse=True)
    steps = [(a["action"], a["outcome"]) for a in everything]
    for step in [("access.request", "ALLOWED"), ("access.approve", "ALLOWED"), ("grant.create", "ALLOWED"),
                 ("artifact.decrypt", "ALLOWED"), ("access.deny", "DENIED"),
                 ("artifact.decrypt", "DENIED")]:  # fmt: skip
        assert step in steps
    allowed = next(a for a in everything if a["action"] == "artifact.decrypt" and a["outcome"] == "ALLOWED")
    assert allowed["approver"] == ALICE and allowed["principal"] == CONSUMER

    # And the outcome filter returns only the denials, with the denied decrypt's principal
    denied = dash.json("/attempts.json?outcome=DENIED")["attempts"]
    assert denied and {a["outcome"] for a in denied} == {"DENIED"}
    refused = next(a for a in denied if a["action"] == "artifact.decrypt")
    assert refused["principal"] == CONSUMER and refused["request_id"] == ids["denied"]
    assert refused["outcome_words"] == "decrypt denied"

    # And principal / artifact filters use their indexes
    by_alice = dash.json(f"/attempts.json?principal={ALICE}")["attempts"]
    assert by_alice and {a["principal"] for a in by_alice} == {ALICE}
    by_artifact = dash.json(f"/attempts.json?artifact={ids['artifact']}&outcome=ALLOWED")["attempts"]
    assert by_artifact and {a["artifact_id"] for a in by_artifact} == {ids["artifact"]}
    assert {a["outcome"] for a in by_artifact} == {"ALLOWED"}
    assert dash.json("/attempts.json?artifact=nope/none")["attempts"] == []


def test_attempts_are_paged_with_a_cursor(dash: Dash, tmp_path: Path) -> None:
    # Given a session (several attempt records)
    run_session(dash, tmp_path)
    everything = dash.json("/attempts.json?limit=100")["attempts"]

    # When they are read two at a time
    seen, cursor = [], ""
    while True:
        page = dash.json("/attempts.json?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["attempts"]) <= 2
        seen.extend(a["seq"] for a in page["attempts"])
        cursor = page["next_cursor"]
        if not cursor:
            break

    # Then the pages together are the whole log, in order, once each
    assert seen == [a["seq"] for a in everything]
    status, _, body = dash.get("/attempts.json?cursor=abc")
    assert status == 400 and "cursor" in body


def test_the_page_lists_quarantine_and_links_its_verdict(dash: Dash, tmp_path: Path) -> None:
    # Given a blocked upload
    run_session(dash, tmp_path)
    dash.pump.pump_until_idle()

    # When the quarantine list and the page are read
    quarantine = dash.json("/quarantine.json")["quarantine"]
    status, headers, html = dash.get("/")

    # Then the blocked pickle is listed with its failing rule, and its verdict JSON is one link away
    assert [q["artifact_id"] for q in quarantine] == [f"{dash.stack.ingest}/models/evil.pkl"]
    assert any(r["rule"] == "MS-CODE-EXEC" for r in quarantine[0]["failing_rules"])
    verdict = dash.json(
        f"/verdict.json?artifact={quarantine[0]['artifact_id']}&version={quarantine[0]['version_id']}"
    )
    assert verdict["verdict"] == "BLOCKED" and verdict["version_id"] == quarantine[0]["version_id"]
    assert status == 200 and "models/evil.pkl" in html and "verdict JSON" in html
    assert "script-src 'self'" in headers["Content-Security-Policy"] and "unsafe-inline" not in html
    assert "<script>" not in html and "style=" not in html


def test_static_files_are_an_allowlist(dash: Dash) -> None:
    assert dash.get("/static/dashboard.js")[0] == 200
    assert dash.get("/static/vendor/uPlot.iife.min.js")[0] == 200
    assert dash.get("/favicon.ico")[1]["Content-Type"] == "image/svg+xml"
    assert dash.get("/static/..%2F..%2Fconfig.py")[0] == 404
    assert dash.get("/static/nothing.js")[0] == 404
    config.scan_settings.cache_clear()


def test_bulk_jobs_are_listed_with_their_progress(dash: Dash) -> None:
    # Given a bulk job recorded in the jobs table (as `modelshield jobs create` records it)
    from modelshield.jobs.models import Job, Operation, Source
    from modelshield.jobs.store import JobStore

    store = JobStore(dash.stack.env["JOBS_TABLE"], boto3.resource("dynamodb"))
    job = Job(job_id="job-1", operation=Operation.ENCRYPT, source=Source(bucket="repo", prefix="models/"),
              requester=ALICE, created_at=datetime.now(UTC))  # fmt: skip
    store.create(job)

    # When metrics.json and the page are read
    jobs = dash.json("/metrics.json")["jobs"]
    _, _, html = dash.get("/")

    # Then the job is there with its operation, source, status and progress
    assert [(j["job_id"], j["operation"], j["status"]) for j in jobs] == [("job-1", "encrypt", "PENDING")]
    assert jobs[0]["source"] == "s3://repo/models/" and jobs[0]["done"] == 0
    assert "job-1" in html and "no jobs" not in html
    # And its details link answers with the job's error report; an unknown job is a 404
    status, _, body = dash.get("/jobs/errors.json?job=job-1")
    assert status == 200 and json.loads(body)["job_id"] == "job-1"
    assert dash.get("/jobs/errors.json?job=nope")[0] == 404
