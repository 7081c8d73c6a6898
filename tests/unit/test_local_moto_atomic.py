"""moto's DynamoDB under concurrent requests: a conditional write admits one writer (local/moto_atomic.py,
installed test-wide by conftest and by the local stack)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from modelshield.local.moto_atomic import make_dynamodb_atomic
from modelshield.store.leases import LeaseStore
from moto import mock_aws


def test_threads_taking_one_lease_at_once_get_one_holder() -> None:
    # Given moto's DynamoDB made atomic and a lease table
    make_dynamodb_atomic()
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="leases",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        leases = LeaseStore("leases", dynamodb)

        # When six threads take each of 100 leases at the same moment (unpatched: two holders in ~3.5%)
        holders_per_lease = []
        for n in range(100):
            holders: list[str] = []
            start = threading.Barrier(6)

            def take(name: str = f"artifact-{n}", got: list[str] = holders, go: Any = start) -> None:
                go.wait()
                if (token := leases.acquire(name)) is not None:
                    got.append(token)

            threads = [threading.Thread(target=take) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            holders_per_lease.append(len(holders))

    # Then every lease has exactly one holder
    assert holders_per_lease == [1] * 100


def test_patching_twice_wraps_once() -> None:
    # Given the patch applied twice
    from moto.dynamodb.responses import DynamoHandler

    make_dynamodb_atomic()
    first = DynamoHandler.call_action
    make_dynamodb_atomic()

    # Then the handler is the same single wrapper
    assert DynamoHandler.call_action is first
