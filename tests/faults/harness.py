"""Fault injection on real boto3 clients against moto, and the invariants every recovery must leave.

Faults are botocore event hooks (`before-parameter-build.<service>.<Operation>`, the hook that sees the
call's own parameters; `before-call` sees only the serialised request) registered for every boto3
session before the handler builds its clients, so the code under test talks to moto through unmodified
clients and meets exactly the error AWS would send (a `ClientError` with AWS's code and message).
Delivery goes through the real scan queue: a message the handler fails is received again, with SQS's
own `ApproximateReceiveCount`, until moto's redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from botocore.handlers import BUILTIN_HANDLERS
from modelshield.local.stack import sqs_record
from modelshield.models import ScanRecord, Verdict
from modelshield.store.dynamo import from_item

ENVELOPE_PREFIX = bytes([0x02, 0x04, 0x78])  # ESDK message format v2, suite 0x0478 (committing)
RELEASING_TAGS = ("ALLOWED", "ALLOWED_WITH_WARNINGS")


@dataclass
class Fault:
    """One injected failure: which call, how often, and what AWS answers."""

    service: str  # botocore service id, lower case: s3, kms, dynamodb
    operation: str  # e.g. PutObjectTagging
    code: str = "InternalError"
    message: str = "injected failure"
    status: int = 500
    times: int | None = 1  # None: every call fails (persistent)
    when: Callable[[dict[str, Any]], bool] | None = None  # only calls whose params match
    action: Callable[[dict[str, Any]], None] | None = None  # run instead of failing (pauses, side effects)
    hits: int = 0


@dataclass
class Faults:
    """The registry the hooks consult. Tests add faults; `calls` counts every call seen per operation."""

    faults: list[Fault] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, service: str, operation: str, **kwargs: Any) -> Fault:
        fault = Fault(service=service, operation=operation, **kwargs)
        self.faults.append(fault)
        return fault

    def on(self, service: str, operation: str, action: Callable[[dict[str, Any]], None], **kw: Any) -> Fault:
        """Run `action(params)` before matching calls (a pause, a concurrent delete) instead of failing."""
        return self.fail(service, operation, action=action, times=kw.pop("times", None), **kw)

    def clear(self) -> None:
        self.faults.clear()

    def count(self, service: str, operation: str) -> int:
        return self.calls.get(f"{service}.{operation}", 0)

    def before_call(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        service = service.lower()
        with self._lock:
            self.calls[f"{service}.{operation}"] = self.calls.get(f"{service}.{operation}", 0) + 1
            fault = next((f for f in self.faults if self._matches(f, service, operation, params)), None)
            if fault is not None:
                fault.hits += 1
        if fault is None:
            return
        if fault.action is not None:
            fault.action(params)
            return
        raise ClientError(
            {
                "Error": {"Code": fault.code, "Message": fault.message},
                "ResponseMetadata": {"HTTPStatusCode": fault.status},
            },
            operation,
        )

    @staticmethod
    def _matches(fault: Fault, service: str, operation: str, params: dict[str, Any]) -> bool:
        if fault.service != service or fault.operation != operation:
            return False
        if fault.times is not None and fault.hits >= fault.times:
            return False
        return fault.when is None or bool(fault.when(params))


@contextmanager
def installed() -> Iterator[Faults]:
    """A fault registry that every botocore session created from now on consults before each call: the
    hook sits in botocore's built-in handlers, the list every new session registers, as moto's own does."""
    registry = Faults()
    entry = ("before-parameter-build", registry.before_call)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield registry
    finally:
        BUILTIN_HANDLERS.remove(entry)


def table_is(name: str) -> Callable[[dict[str, Any]], bool]:
    """A `when` predicate for DynamoDB calls on one table (PutItem, Query, TransactWriteItems...)."""

    def match(params: dict[str, Any]) -> bool:
        if params.get("TableName") == name:
            return True
        return any(next(iter(op.values())).get("TableName") == name for op in params.get("TransactItems", []))

    return match


def bucket_is(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("Bucket") == name


# -- delivery through the real queue ----------------------------------------------------------------------


def drain(stack: Any, *, max_rounds: int = 30) -> list[dict[str, Any]]:
    """Deliver every queued message to the handler until the queue is empty, as Lambda's event-source
    mapping would: a failed message goes back to the queue at once (visibility 0) and is received again;
    moto's redrive policy moves it to the dead-letter queue after maxReceiveCount receives."""
    responses = []
    for _ in range(max_rounds):
        messages = stack.sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        messages = [m for m in messages if json.loads(m["Body"]).get("Event") != "s3:TestEvent"]
        if not messages:
            return responses
        try:
            response = stack.invoke({"Records": [sqs_record(m, stack.queue_arn) for m in messages]})
        except Exception:
            response = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
        responses.append(response)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] in failed:
                stack.sqs.change_message_visibility(
                    QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"the scan queue did not drain in {max_rounds} rounds")


def dead_letters(stack: Any) -> list[dict[str, Any]]:
    url = stack.provisioned.names["ScanDeadLetterQueue"]
    attributes = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    count = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(count + 2):
        if len(seen) >= count:
            break
        page = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        seen.update({m["MessageId"]: m for m in page.get("Messages", [])})
    return list(seen.values())


# -- what the stores and buckets hold ----------------------------------------------------------------------


def scan_records(stack: Any) -> list[ScanRecord]:
    table = stack.table("SCANS_TABLE")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return [ScanRecord.model_validate(from_item(i)) for i in items]


def artifact_items(stack: Any) -> list[dict[str, Any]]:
    """Artifact version states (items with a verdict: other bookkeeping items are skipped)."""
    return [from_item(i) for i in stack.table("ARTIFACTS_TABLE").scan()["Items"] if "verdict" in i]


def vault_versions(stack: Any) -> list[dict[str, Any]]:
    return stack.s3.list_object_versions(Bucket=stack.vault).get("Versions", [])


def ingest_tag(stack: Any, key: str, version: str) -> str | None:
    tagset = stack.s3.get_object_tagging(Bucket=stack.ingest, Key=key, VersionId=version)["TagSet"]
    return {t["Key"]: t["Value"] for t in tagset}.get("modelshield-verdict")


def check_invariants(
    stack: Any, uploads: dict[tuple[str, str], bytes], *, workdir: Path | None = None
) -> None:
    """What any recovery must leave, for uploads {(key, version): body}:
    nothing lost (each version has a verdict; what reached the DLQ has an ERROR verdict); one upload
    record per version; the state, the latest record and the ingest tag agree (a version that is not
    released never carries a releasing tag); every vault version is envelope ciphertext that a record
    references (no orphans); consumers' keys hold only released versions, and the newest one; no
    plaintext left in the work directory."""
    records = scan_records(stack)
    states = {(s["artifact_id"], s["version_id"]): s for s in artifact_items(stack)}
    dlq = dead_letters(stack)
    for key, version in uploads:
        artifact = f"{stack.ingest}/{key}"
        mine = [r for r in records if r.artifact_id == artifact and r.version_id == version]
        assert mine, f"{key}@{version}: no verdict recorded" + (" (only in the DLQ)" if dlq else " (lost)")
        uploads_of_version = [r for r in mine if r.trigger == "upload"]
        assert len(uploads_of_version) == 1, (
            f"{key}@{version}: {len(uploads_of_version)} upload records "
            f"{[r.verdict.value for r in uploads_of_version]}"
        )
        latest = max(mine, key=lambda r: r.scan_ref)
        state = states.get((artifact, version))
        if state is not None or latest.verdict is not Verdict.ERROR:
            assert state is not None, f"{key}@{version}: a {latest.verdict} record but no artifact state"
            assert state["verdict"] == latest.verdict.value, (
                f"{key}@{version}: state {state['verdict']} but latest record {latest.verdict}"
            )
        tag = ingest_tag(stack, key, version)
        if latest.verdict.releases:
            assert tag == latest.verdict.value, f"{key}@{version}: tag {tag} but verdict {latest.verdict}"
        else:
            assert tag not in RELEASING_TAGS, f"{key}@{version}: {latest.verdict} but tagged {tag}"
    if dlq:
        assert any(r.verdict is Verdict.ERROR for r in records), "messages in the DLQ, no ERROR verdict"
    _check_vault(stack, records, states)
    if workdir is not None and workdir.exists():
        left = sorted(p.name for p in workdir.glob("artifact-*"))
        assert left == [], f"plaintext left in the work directory: {left}"


def _check_vault(stack: Any, records: list[ScanRecord], states: dict[Any, dict[str, Any]]) -> None:
    referenced = {(s.get("vault_key"), s.get("vault_version_id")) for s in states.values()}
    referenced |= {
        (uri.split("/", 3)[3].split("?")[0], uri.split("versionId=")[-1])
        for uri in (r.vault_uri for r in records)
        if uri
    }
    by_scan = {r.scan_id: r for r in records}
    versions = vault_versions(stack)
    for version in versions:
        key, vid = version["Key"], version["VersionId"]
        assert (key, vid) in referenced, f"vault {key}@{vid} is referenced by no record (orphan)"
        body = stack.s3.get_object(Bucket=stack.vault, Key=key, VersionId=vid)["Body"].read(3)
        assert body == ENVELOPE_PREFIX, f"vault {key}@{vid} is not envelope ciphertext"
    for version in (v for v in versions if v["IsLatest"]):
        key = version["Key"]
        if key.startswith(("quarantine/", "versions/")):
            continue
        head = stack.s3.head_object(Bucket=stack.vault, Key=key)
        record = by_scan.get(head["Metadata"].get("modelshield-scan-id", ""))
        assert record is not None, f"consumers' {key} holds ciphertext of no recorded scan"
        assert record.verdict.releases, f"consumers' {key} holds a {record.verdict} version"
        listing = stack.s3.list_object_versions(Bucket=stack.ingest, Prefix=key).get("Versions", [])
        order = [v["VersionId"] for v in listing if v["Key"] == key]  # S3 lists newest first
        released = {v for (_, v), s in states.items() if s["key"] == key and Verdict(s["verdict"]).releases}
        newest = next(v for v in order if v in released)
        assert record.version_id == newest, (
            f"consumers' {key} holds {record.version_id}, not the newest released {newest}"
        )
