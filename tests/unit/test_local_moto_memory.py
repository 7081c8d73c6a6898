"""The local stack's moto tuning: its instance lists stop holding transaction copies, and transaction
backups copy what a transaction touches while rolling back exactly as moto does."""

from __future__ import annotations

import gc

import boto3
import pytest
from botocore.exceptions import ClientError
from modelshield.local.moto_memory import install_cheap_transaction_backups, release_tracked_instances
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


def test_a_cancelled_transaction_is_rolled_back_exactly_with_the_cheap_backups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moto_credentials(monkeypatch)
    install_cheap_transaction_backups()
    with mock_aws():
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName=NAME,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        for n in range(5):
            ddb.put_item(TableName=NAME, Item={"pk": {"S": "p"}, "sk": {"N": str(n)}, "v": {"N": "0"}})
        streams = boto3.client("dynamodbstreams")
        arn = streams.list_streams(TableName=NAME)["Streams"][0]["StreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        page = streams.get_records(ShardIterator=iterator["ShardIterator"])
        assert len(page["Records"]) == 5

        # Given a transaction whose first operation updates an item in place and whose second fails
        update = {
            "Update": {
                "TableName": NAME, "Key": {"pk": {"S": "p"}, "sk": {"N": "1"}},
                "UpdateExpression": "SET v = :v", "ExpressionAttributeValues": {":v": {"N": "9"}},
            }
        }  # fmt: skip
        failing = {
            "Put": {
                "TableName": NAME, "Item": {"pk": {"S": "p"}, "sk": {"N": "2"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }  # fmt: skip
        # When it runs, Then it is cancelled
        with pytest.raises(ClientError, match="TransactionCanceled"):
            ddb.transact_write_items(TransactItems=[update, failing])

        # And the table is exactly as before: the in-place update is undone, nothing was added
        items = ddb.query(
            TableName=NAME, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}}
        )["Items"]
        assert [(i["sk"]["N"], i["v"]["N"]) for i in items] == [(str(n), "0") for n in range(5)]
        # And a stream reader holding its iterator sees no record of the rolled-back write, then sees
        # the next real one
        page = streams.get_records(ShardIterator=page["NextShardIterator"])
        assert page["Records"] == []
        ddb.transact_write_items(TransactItems=[update])
        page = streams.get_records(ShardIterator=page["NextShardIterator"])
        assert [r["eventName"] for r in page["Records"]] == ["MODIFY"]
        assert page["Records"][0]["dynamodb"]["NewImage"]["v"] == {"N": "9"}


def test_the_dispatcher_finds_each_hosts_backend_once_and_the_same_as_moto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelshield.local.moto_memory import install_dispatch_cache
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    hosts = ["dynamodb.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com", "kms.us-east-1.amazonaws.com"]
    # Given what moto's own dispatcher answers for a few hosts
    expected = {
        host: DomainDispatcherApplication(create_backend_app).get_backend_for_host(host) for host in hosts
    }

    # When the cache is installed and each host is asked about three times
    install_dispatch_cache()
    install_dispatch_cache()  # idempotent
    listings = 0
    real = backends.list_of_moto_modules

    def counted() -> object:
        nonlocal listings
        listings += 1
        return real()

    monkeypatch.setattr(backends, "list_of_moto_modules", counted)
    dispatcher = DomainDispatcherApplication(create_backend_app)
    answers = [dispatcher.get_backend_for_host(host) for _ in range(3) for host in hosts]

    # Then the answers are moto's, and moto's package directory was listed at most once per host
    assert answers == [expected[host] for _ in range(3) for host in hosts]
    assert expected["dynamodb.us-east-1.amazonaws.com"] == "dynamodb"
    assert listings <= len(hosts)


def test_receiving_from_a_deep_queue_does_not_count_the_queue_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelshield.local.moto_memory import install_cheap_queue_counts
    from moto.sqs.models import Queue

    moto_credentials(monkeypatch)
    install_cheap_queue_counts()
    with mock_aws():
        sqs = boto3.client("sqs")
        url = sqs.create_queue(QueueName="deep", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        # Given a queue 500 messages deep
        for start in range(0, 500, 10):
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(start, start + 10)],
            )
        counts = 0
        real = Queue.attributes.fget

        def counted(queue: Queue) -> object:
            nonlocal counts
            counts += 1
            return real(queue)

        monkeypatch.setattr(Queue, "attributes", property(counted))

        # When ten messages are received
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]

        # Then they come without the queue's attributes (three counts over every message) being built
        assert len(got) == 10
        assert counts == 0

        # And a message older than the queue's retention period is not handed out, as moto decides
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sqs.models import sqs_backends

        old = sqs.create_queue(QueueName="old", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=old, MessageBody="stale")
        for message in sqs_backends[DEFAULT_ACCOUNT_ID][sqs.meta.region_name].queues["old"]._messages:
            message.sent_timestamp = 0  # sent in 1970
        assert sqs.receive_message(QueueUrl=old, MaxNumberOfMessages=10).get("Messages", []) == []


def test_a_deep_queue_is_counted_exactly_with_one_clock_read_per_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelshield.local.moto_memory import install_cheap_queue_counts
    from moto.sqs import models

    moto_credentials(monkeypatch)
    install_cheap_queue_counts()
    with mock_aws():
        sqs = boto3.client("sqs")
        url = sqs.create_queue(QueueName="counted")["QueueUrl"]
        # Given 300 messages, 20 of them delayed, and 10 received (in flight)
        for start in range(0, 300, 10):
            delay = 600 if start < 20 else 0
            batch = [
                {"Id": str(n), "MessageBody": f"m{n}", "DelaySeconds": delay}
                for n in range(start, start + 10)
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=batch)
        assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 10
        reads = 0
        real = models.unix_time_millis

        def clock() -> float:
            nonlocal reads
            reads += 1
            return real()

        monkeypatch.setattr(models, "unix_time_millis", clock)

        # When the queue's counts are asked for
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        counts = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=[*names, "ApproximateNumberOfMessagesDelayed"]
        )

        # Then they are exact, and the clock was read a few times, not per message
        assert counts["Attributes"] == {
            "ApproximateNumberOfMessages": "270",
            "ApproximateNumberOfMessagesNotVisible": "10",
            "ApproximateNumberOfMessagesDelayed": "20",
        }
        assert reads < 50, f"{reads} clock reads for three counts of 300 messages"
