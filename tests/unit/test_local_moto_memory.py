"""The local stack's housekeeping: moto's per-class instance lists stop holding transaction copies."""

from __future__ import annotations

import gc

import boto3
import pytest
from modelshield.local.moto_memory import release_tracked_instances
from moto import mock_aws
from moto.dynamodb.models.table import Table

from tests.builders import moto_credentials

NAME = "modelshield-memory-probe"


def tables_named(name: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Table) and o.name == name)


def test_transaction_copies_are_released_and_the_live_table_keeps_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moto_credentials(monkeypatch)
    with mock_aws():
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName=NAME,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # Given ten transactions: moto deep-copies the table for each (its rollback copy) and tracks it
        for n in range(10):
            ddb.transact_write_items(
                TransactItems=[{"Put": {"TableName": NAME, "Item": {"pk": {"S": f"k{n}"}}}}]
            )
        assert tables_named(NAME) == 11

        # When the housekeeping runs
        assert release_tracked_instances() > 0

        # Then only the live table is left in memory, and it still answers with every item
        assert tables_named(NAME) == 1
        assert ddb.scan(TableName=NAME)["Count"] == 10
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": NAME, "Item": {"pk": {"S": "k10"}}}}])
        assert ddb.get_item(TableName=NAME, Key={"pk": {"S": "k10"}})["Item"] == {"pk": {"S": "k10"}}
