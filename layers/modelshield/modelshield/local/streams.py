"""Lambda's DynamoDB-stream event-source mapping, played locally: read each shard from where the last
batch ended, hand the batch to the real handler, and on a reported failure read again from that record.

Used by the local stack's poller thread and by tests that want the counters up to date right now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from modelshield.local.template import REGION


def lambda_stream_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A `get_records` record in the shape Lambda delivers (creation time as epoch seconds)."""
    change = dict(record.get("dynamodb") or {})
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", REGION),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }


class StreamPump:
    def __init__(
        self,
        streams: Any,
        stream_arns: list[str],
        handler: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        batch_size: int = 100,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.streams = streams
        self.stream_arns = stream_arns
        self.handler = handler
        self.batch_size = batch_size
        self.keep = keep  # the mapping's FilterCriteria: records it drops never reach the handler
        self._iterators: dict[tuple[str, str], str] = {}

    def pump(self) -> int:
        """Deliver everything currently in the streams; returns how many records were handed over."""
        delivered = 0
        for arn in self.stream_arns:
            shards = self.streams.describe_stream(StreamArn=arn)["StreamDescription"].get("Shards", [])
            for shard in shards:
                delivered += self._drain(arn, shard["ShardId"])
        return delivered

    def pump_until_idle(self, rounds: int = 20) -> int:
        total = 0
        for _ in range(rounds):
            delivered = self.pump()
            total += delivered
            if not delivered:
                break
        return total

    def _drain(self, arn: str, shard_id: str) -> int:
        delivered = 0
        key = (arn, shard_id)
        while True:
            iterator = (
                self._iterators.get(key)
                or self.streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            page = self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)
            records = page.get("Records", [])
            if not records:
                if page.get("NextShardIterator"):
                    self._iterators[key] = page["NextShardIterator"]
                return delivered
            kept = [r for r in records if self.keep is None or self.keep(r)]
            delivered += len(records)
            if not kept:
                self._iterators[key] = page["NextShardIterator"]
                continue
            response = self.handler({"Records": [lambda_stream_record(r, arn) for r in kept]}) or {}
            failures = (response.get("batchItemFailures") or []) if isinstance(response, dict) else []
            if failures:
                # Lambda retries from the first failed record: next time, start there.
                self._iterators[key] = self.streams.get_shard_iterator(
                    StreamArn=arn,
                    ShardId=shard_id,
                    ShardIteratorType="AT_SEQUENCE_NUMBER",
                    SequenceNumber=str(failures[0]["itemIdentifier"]),
                )["ShardIterator"]
                return delivered
            self._iterators[key] = page["NextShardIterator"]
