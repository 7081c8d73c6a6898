"""The scan queue's dead-letter queue: what is in it, and sending it back once the cause is fixed.

A message lands there after its last attempt failed; by then that attempt has recorded an ERROR verdict
saying what failed and what to do (modelshield.recovery). `redrive` sends each message back to the queue
it came from (scan or rescan) before deleting it from the DLQ, so a crash in between makes a duplicate
(which idempotency turns into a no-op), never a loss. The same functions back `modelshield dlq
list|redrive` and the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

PEEK_VISIBILITY_SECONDS = 0  # listing must not hide messages from a redrive that follows it
REDRIVE_VISIBILITY_SECONDS = 60


class DeadLetter(BaseModel):
    """One dead-lettered scan request (JSON contract of `dlq list|redrive --format json`)."""

    message_id: str
    sent_at: datetime | None = None
    receive_count: int = 0
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    trigger: str = "upload"
    body: str


def _describe(message: dict[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    letter = DeadLetter(
        message_id=message["MessageId"],
        sent_at=datetime.fromtimestamp(int(sent) / 1000, tz=UTC) if sent else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        body=message["Body"],
    )
    try:  # best effort: the body is an S3 notification or a rescan request; anything else stays raw
        from modelshield.events import object_events

        events = object_events(message["Body"])
    except Exception:
        return letter
    if events:
        first = events[0]
        letter.bucket, letter.key, letter.version_id = first.bucket, first.key, first.version_id
        letter.trigger = first.trigger
    return letter


def _count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def list_dead_letters(sqs: Any, dlq_url: str, *, limit: int = 1000) -> list[DeadLetter]:
    """The messages in the DLQ (up to `limit`), oldest first, without removing them."""
    expected = min(_count(sqs, dlq_url), limit)
    seen: dict[str, DeadLetter] = {}
    for _ in range(expected // 10 + 5):
        if len(seen) >= expected:
            break
        page = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
            AttributeNames=["All"],
        ).get("Messages", [])
        for message in page:
            seen.setdefault(message["MessageId"], _describe(message))
    return sorted(seen.values(), key=lambda d: d.sent_at or datetime.min.replace(tzinfo=UTC))[:limit]


def redrive(
    sqs: Any, dlq_url: str, queue_url: str, *, rescan_queue_url: str = "", limit: int | None = None
) -> list[DeadLetter]:
    """Move DLQ messages back to the queue they came from (up to `limit`); returns what was moved.

    The scan and rescan queues share this DLQ: an upload's event goes back to the scan queue, a rescan
    request to the rescan queue (the RescanFunction reads vault copies; the ScanFunction reads uploads).
    """
    moved: list[DeadLetter] = []
    while limit is None or len(moved) < limit:
        page = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - len(moved)) if limit else 10,
            VisibilityTimeout=REDRIVE_VISIBILITY_SECONDS,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not page:
            break
        for message in page:
            letter = _describe(message)
            target = rescan_queue_url if letter.trigger == "rescan" and rescan_queue_url else queue_url
            sqs.send_message(QueueUrl=target, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved.append(letter)
    return moved


def as_json(letters: list[DeadLetter]) -> list[dict[str, Any]]:
    return [json.loads(d.model_dump_json()) for d in letters]
