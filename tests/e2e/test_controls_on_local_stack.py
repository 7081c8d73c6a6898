"""Controls that hold against a principal with ordinary rights, shown on the local stack.

moto enforces no IAM, bucket or key policy, so these run through ModelShield's own code paths: what they
show is that ModelShield itself refuses (and records) what the template's policies refuse in AWS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelshield import wiring
from modelshield.audit import AuditAction
from modelshield.cli import main as cli
from modelshield.local.stack import LocalStack
from modelshield.store.audit import DynamoAuditStore

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path / "state"))
    with LocalStack(quiet=True) as running:
        yield running
    os.environ.clear()
    os.environ.update(saved)


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
