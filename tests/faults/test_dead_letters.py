"""What still lands in the dead-letter queue (the scans table itself failing) is listed and redriven by
`modelshield dlq list|redrive` and the API, and recovers completely once the cause is fixed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from modelshield.cli import main
from modelshield.events import rescan_message
from modelshield.local.samples import benign_checkpoint
from modelshield.local.stack import LocalContext, load_handler

from tests.builders import EVENTS, MotoStack
from tests.faults.harness import Faults, check_invariants, dead_letters, drain, table_is

ENGINEER = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/alice"
CONSUMER = "arn:aws:sts::123456789012:assumed-role/InferenceService/i-0abc"


@pytest.fixture
def dead_lettered(stack: MotoStack, faults: Faults) -> tuple[str, str]:
    """An upload whose every attempt failed because the scans table refused writes: in the DLQ."""
    version = stack.put("models/a.pt", benign_checkpoint())
    faults.fail("dynamodb", "PutItem", times=None, when=table_is(stack.env["SCANS_TABLE"]))
    faults.fail("dynamodb", "TransactWriteItems", times=None, when=table_is(stack.env["SCANS_TABLE"]))
    drain(stack)
    assert len(dead_letters(stack)) == 1
    faults.clear()  # the cause is fixed
    return "models/a.pt", version


@pytest.fixture
def queue_env(stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIELD_TARGET", "aws")
    monkeypatch.setenv("SCAN_QUEUE_URL", stack.queue_url)
    monkeypatch.setenv("SCAN_DEAD_LETTER_QUEUE_URL", stack.provisioned.names["ScanDeadLetterQueue"])


def test_dlq_list_and_redrive_recover_an_event_that_failed_every_attempt(
    stack: MotoStack, dead_lettered: tuple[str, str], queue_env: None, workdir: Path, capsys: Any
) -> None:
    key, version = dead_lettered

    # When the DLQ is listed
    assert main(["dlq", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["dead_letters"]

    # Then it names the object, and the message is still there
    assert [(d["bucket"], d["key"]) for d in listed] == [(stack.ingest, key)]
    assert listed[0]["receive_count"] >= 1 and listed[0]["message_id"]
    assert len(dead_letters(stack)) == 1

    # When it is redriven and the scan queue delivered
    assert main(["dlq", "redrive", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1
    drain(stack)

    # Then the DLQ is empty and the upload has its one verdict, consistent everywhere
    assert dead_letters(stack) == []
    check_invariants(stack, {(key, version): b""}, workdir=workdir)


def test_dlq_list_on_an_empty_queue_says_so(stack: MotoStack, queue_env: None, capsys: Any) -> None:
    assert main(["dlq", "list"]) == 0
    assert "empty" in capsys.readouterr().out


def _api(stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """call(method, path, user, body) -> (status, body) on the real ApiFunction with its template env."""
    spec = stack.provisioned.functions["ApiFunction"]
    for name, value in spec.environment.items():
        monkeypatch.setenv(name, value)
    handler = load_handler(spec)

    def call(method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        event = copy.deepcopy(json.loads((EVENTS / "api_access_list.json").read_text()))
        event.update(
            resource=path,
            path=path,
            httpMethod=method,
            queryStringParameters=None,
            multiValueQueryStringParameters=None,
            body=None if body is None else json.dumps(body),
        )
        event["requestContext"].update(resourcePath=path, httpMethod=method)
        event["requestContext"]["identity"]["userArn"] = user
        response = handler(event, LocalContext("ApiFunction", 512, 29))
        return response["statusCode"], json.loads(response["body"] or "null")

    return call


def _bodies(stack: MotoStack, queue_url: str) -> list[dict[str, Any]]:
    messages = stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_the_api_lists_the_dlq_and_only_a_security_engineer_redrives_it(
    stack: MotoStack, dead_lettered: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    call = _api(stack, monkeypatch)
    status, body = call("GET", "/dlq", CONSUMER)
    assert status == 200 and [d["key"] for d in body["dead_letters"]] == [dead_lettered[0]]
    assert call("POST", "/dlq/redrive", CONSUMER, {})[0] == 403
    status, body = call("POST", "/dlq/redrive", ENGINEER, {})
    assert status == 200 and body["count"] == 1
    assert dead_letters(stack) == []


def test_a_redrive_sends_uploads_to_the_scan_queue_and_rescans_to_the_rescan_queue(
    stack: MotoStack, dead_lettered: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a dead-lettered upload and a dead-lettered rescan (both queues share the DLQ)
    key, version = dead_lettered
    dlq = stack.provisioned.names["ScanDeadLetterQueue"]
    stack.sqs.send_message(QueueUrl=dlq, MessageBody=rescan_message(stack.ingest, key, version, "req-1"))
    call = _api(stack, monkeypatch)
    # When the Security Engineer redrives them through the API (the template's environment)
    status, body = call("POST", "/dlq/redrive", ENGINEER, {})
    # Then each went back to the queue it came from, none to the other
    assert status == 200 and sorted(d["trigger"] for d in body["redriven"]) == ["rescan", "upload"]
    scans, rescans = _bodies(stack, stack.queue_url), _bodies(stack, stack.rescan_queue_url)
    assert len(scans) == 1 and "Records" in scans[0]
    assert len(rescans) == 1 and rescans[0]["key"] == key and "Records" not in rescans[0]
