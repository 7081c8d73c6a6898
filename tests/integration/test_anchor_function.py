"""AuditAnchorFunction's real handler on the provisioned template: it anchors the head and reports an
incident (a rolled-back chain) as a result and a log line, without the logging itself failing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from modelshield.audit import AuditAction, AuditLog
from modelshield.local.stack import LocalContext, load_handler
from modelshield.store.audit import DynamoAuditStore
from modelshield.wiring import dynamodb

from tests.builders import provisioned_template


@pytest.fixture
def anchor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    with provisioned_template(monkeypatch, tmp_path) as (_clients, out):
        spec = out.functions["AuditAnchorFunction"]
        for name, value in spec.environment.items():
            monkeypatch.setenv(name, value)
        store = DynamoAuditStore(spec.environment["AUDIT_TABLE"], dynamodb())
        handler = load_handler(spec)
        yield store, lambda: handler({}, LocalContext("AuditAnchorFunction", 256, 60))


def test_the_handler_anchors_then_reports_a_rolled_back_chain_as_an_incident(
    anchor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, invoke = anchor
    # Given two appended records
    log = AuditLog(store, sleep=lambda _s: None)
    for i in range(2):
        log.append(AuditAction.ACCESS_REQUEST, principal="arn:aws:iam::1:role/R", detail={"i": i})
    # When the anchor function runs
    first = invoke()
    # Then the head is anchored
    assert first["status"] == "anchored" and first["anchor"]["seq"] == 2
    # Given the head rolled back by a chain writer
    head = store.table.get_item(Key={"pk": "head", "seq": 0})["Item"]
    store.table.put_item(Item={**head, "head_seq": 1})
    # When the function runs again
    with caplog.at_level(logging.INFO):
        second = invoke()
    # Then it returns and logs the incident with its reason (the log line itself must not fail)
    assert second["status"] == "incident" and "below anchored record 2" in second["message"], second
    assert any("not re-anchored" in r.getMessage() for r in caplog.records)
