"""S3 event notifications delivered through SQS, parsed with Powertools' parser models.

Powertools' `S3RecordModel` requires fields that real S3 always sends but that moto (our local stack and
tests) leaves out: `userIdentity`, `requestParameters`, `responseElements`, the bucket's
`ownerIdentity`. The subclasses below make exactly those optional and change nothing else, so a real event
is validated as strictly as before. Object keys arrive URL-encoded (`+` for space, `%2F` for `/` under moto)
and are decoded with `unquote_plus`.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models.s3 import (
    S3Bucket,
    S3Identity,
    S3Message,
    S3Model,
    S3OwnerIdentify,
    S3RecordModel,
    S3RequestParameters,
    S3ResponseElements,
)
from pydantic import BaseModel, ValidationError

from modelshield.errors import UsageError


class _Bucket(S3Bucket):
    ownerIdentity: S3OwnerIdentify | None = None  # type: ignore[assignment]


class _Message(S3Message):
    bucket: _Bucket  # type: ignore[assignment]


class _Record(S3RecordModel):
    userIdentity: S3Identity | None = None  # type: ignore[assignment]
    requestParameters: S3RequestParameters | None = None  # type: ignore[assignment]
    responseElements: S3ResponseElements | None = None  # type: ignore[assignment]
    s3: _Message  # type: ignore[assignment]


class S3Notification(S3Model):
    Records: list[_Record]  # type: ignore[assignment]


class ObjectEvent(BaseModel):
    """One object-created event, decoded: what the pipeline processes (idempotently, per version)."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str | None = None
    event_name: str = "ObjectCreated:Put"
    event_time: datetime | None = None
    principal_id: str | None = None
    sequencer: str | None = None
    trigger: str = "upload"  # upload | rescan
    request_id: str | None = None  # set for rescans, so each one is its own idempotent unit of work


RESCAN_MARKER = "modelshield:rescan"


def rescan_message(bucket: str, key: str, version_id: str, request_id: str) -> str:
    """The SQS body that asks the ScanFunction to re-evaluate one artifact version."""
    return json.dumps(
        {
            "Event": RESCAN_MARKER,
            "bucket": bucket,
            "key": key,
            "version_id": version_id,
            "request_id": request_id,
        }
    )


def is_test_event(body: dict) -> bool:
    """S3 sends `s3:TestEvent` when a notification configuration is saved: nothing to scan."""
    return body.get("Event") == "s3:TestEvent"


def object_events(body: str | dict) -> list[ObjectEvent]:
    """Decode an SQS message body holding an S3 notification. Raises UsageError on anything else."""
    try:
        payload = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError as exc:
        raise UsageError(f"SQS message body is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(payload, dict):
        raise UsageError("SQS message body is not a JSON object with 'Records'")
    if is_test_event(payload):
        return []
    if payload.get("Event") == RESCAN_MARKER:
        try:
            return [ObjectEvent.model_validate({**payload, "trigger": "rescan", "event_name": "Rescan"})]
        except ValidationError as exc:
            raise UsageError(f"malformed rescan request: {exc.errors()[0]['msg']}") from None
    try:
        notification = S3Notification.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"not an S3 event notification: {where}: {first['msg']}") from None
    except (AttributeError, TypeError) as exc:  # Powertools' pre-validator assumes a well-formed record
        raise UsageError(f"not an S3 event notification: Records: malformed record ({exc})") from None
    events: list[ObjectEvent] = []
    for record in notification.Records:
        if not record.eventName.startswith("ObjectCreated"):
            continue
        obj = record.s3.object
        events.append(
            ObjectEvent(
                bucket=record.s3.bucket.name,
                key=unquote_plus(obj.key),
                version_id=obj.versionId,
                size=int(obj.size) if obj.size is not None else None,
                etag=obj.eTag,
                event_name=record.eventName,
                event_time=record.eventTime,
                principal_id=record.userIdentity.principalId if record.userIdentity else None,
                sequencer=obj.sequencer,
            )
        )
    return events
