"""Duplicate, concurrent and out-of-order deliveries: one record per version, the newest released version
at consumers' key, whatever the order (finding 2 of issue 11)."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from modelshield.local.samples import benign_checkpoint
from modelshield.local.stack import LocalContext, load_handler

from tests.builders import MotoStack, s3_event
from tests.faults.harness import Faults, bucket_is, check_invariants, drain, scan_records


def second_container(stack: MotoStack) -> Any:
    """Another Lambda container: the same handler module loaded afresh (its own clients and state)."""
    return load_handler(stack.provisioned.functions["ScanFunction"])


def run_at_once(*jobs: tuple[str, Any]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn), name=name) for name, fn in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_a_duplicate_delivery_leaves_one_record(stack: MotoStack, workdir: Path) -> None:
    # Given an upload whose notification S3 delivered twice
    version = stack.put("models/a.pt", benign_checkpoint())
    body = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    for message in body:
        stack.sqs.change_message_visibility(
            QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    real = [m for m in body if json.loads(m["Body"]).get("Event") != "s3:TestEvent"]
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=real[0]["Body"])

    # When both are processed
    drain(stack)

    # Then one record, one vault version
    check_invariants(stack, {("models/a.pt", version): b""}, workdir=workdir)


def test_two_containers_on_one_event_leave_one_record(stack: MotoStack, faults: Faults) -> None:
    # Given one event handed to two containers at the same moment, both past the idempotency check
    # (Powertools refuses the second while the first is in progress; past its expiry, or with a
    # version-less duplicate, only the pipeline stands between them)
    from modelshield import wiring
    from modelshield.events import ObjectEvent
    from modelshield.pipeline import process_object

    version = stack.put("models/a.pt", benign_checkpoint())
    event = ObjectEvent(bucket=stack.ingest, key="models/a.pt", version_id=version)
    containers = [wiring.runtime() for _ in range(2)]
    arrived = threading.Barrier(2, timeout=2)

    def both_scanned(_: dict[str, Any]) -> None:
        try:
            arrived.wait()
        except threading.BrokenBarrierError:
            pass  # one of them was held back before the vault: fine

    faults.on(
        "dynamodb",
        "PutItem",
        both_scanned,
        when=lambda p: str(p.get("Item", {}).get("id", "")).startswith("lease#"),
    )

    # When both process it
    run_at_once(
        ("a", lambda: process_object(event, containers[0])),
        ("b", lambda: process_object(event, containers[1])),
    )

    # Then exactly one record and one vault version
    check_invariants(stack, {("models/a.pt", version): b""})


def test_concurrent_versions_never_roll_consumers_back(stack: MotoStack, faults: Faults) -> None:
    # Given two benign versions processed at once, the older one's vault write landing last
    v1 = stack.put("models/m.pt", benign_checkpoint("v1"))
    v2 = stack.put("models/m.pt", benign_checkpoint("v2"))
    other = second_container(stack)
    newer_written = threading.Event()

    def older_writes_last(_: dict[str, Any]) -> None:
        if threading.current_thread().name == "v1":
            newer_written.wait(timeout=3)

    faults.on("s3", "PutObject", older_writes_last, when=bucket_is(stack.vault))
    faults.on(
        "s3",
        "HeadObject",
        lambda _: newer_written.set() if threading.current_thread().name == "v2" else None,
        when=bucket_is(stack.vault),
    )

    # When both are processed concurrently
    run_at_once(
        ("v1", lambda: stack.invoke(s3_event(stack, "models/m.pt", v1))),
        ("v2", lambda: other(s3_event(stack, "models/m.pt", v2), LocalContext("ScanFunction", 3008, 900))),
    )
    drain(stack)

    # Then consumers' key holds v2, the newest
    check_invariants(stack, {("models/m.pt", v1): b"", ("models/m.pt", v2): b""})


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "-".join(map(str, o)))
def test_versions_of_one_key_in_every_order_leave_the_newest_released(
    stack: MotoStack, order: tuple[int, ...]
) -> None:
    # Given three benign versions of one key
    versions = [stack.put("models/m.pt", benign_checkpoint(f"v{n}")) for n in range(3)]
    stack.sqs.purge_queue(QueueUrl=stack.queue_url)

    # When their events are processed in this order
    for n in order:
        stack.invoke(s3_event(stack, "models/m.pt", versions[n]))

    # Then each has one record and consumers' key holds the newest
    check_invariants(stack, {("models/m.pt", v): b"" for v in versions})


def test_versions_of_one_key_all_at_once_leave_the_newest_released(stack: MotoStack) -> None:
    # Given four benign versions of one key, each handed to its own container at the same moment
    versions = [stack.put("models/m.pt", benign_checkpoint(f"v{n}")) for n in range(4)]
    stack.sqs.purge_queue(QueueUrl=stack.queue_url)
    containers = [stack.handler] + [second_container(stack) for _ in versions[1:]]

    def job(n: int) -> Any:
        return lambda: containers[n](
            s3_event(stack, "models/m.pt", versions[n]), LocalContext("ScanFunction", 3008, 900)
        )

    # When they run concurrently (failed ones retried by SQS)
    run_at_once(*[(f"v{n}", job(n)) for n in range(len(versions))])
    drain(stack)

    # Then one record per version and the newest released version at consumers' key
    check_invariants(stack, {("models/m.pt", v): b"" for v in versions})
    assert len(scan_records(stack)) == len(versions)
