"""S3-via-SQS event parsing: keys decoded, versions honoured, moto's sparser events accepted, junk refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelshield.errors import UsageError
from modelshield.events import object_events

EVENTS = Path(__file__).resolve().parents[2] / "events"


def body_of(name: str, index: int = 0) -> str:
    return json.loads((EVENTS / name).read_text())["Records"][index]["body"]


def test_a_plain_put_event_gives_bucket_key_version_and_uploader() -> None:
    # Given the sample put event, When parsed
    (event,) = object_events(body_of("s3_put_via_sqs.json"))
    # Then every field the pipeline needs is there
    assert event.bucket == "modelshield-ingest-example"
    assert event.key == "models/resnet/classifier.pt"
    assert event.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert event.principal_id == "AWS:AROAEXAMPLEID:ml-engineer"
    assert event.size == 1024


def test_keys_with_spaces_plus_and_unicode_are_decoded() -> None:
    # Given a key URL-encoded the way S3 sends it ('+' for space, '%2B' for '+', UTF-8 percent-escapes)
    raw = json.loads(body_of("s3_put_unicode_key_via_sqs.json"))["Records"][0]["s3"]["object"]["key"]
    assert "+" in raw and "%" in raw
    # When parsed, Then the real key comes back
    (event,) = object_events(body_of("s3_put_unicode_key_via_sqs.json"))
    assert event.key == "models/équipe 1/modèle v2+final.pkl"


def test_a_multipart_completion_is_an_object_created_event() -> None:
    (event,) = object_events(body_of("s3_multipart_via_sqs.json"))
    assert event.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert event.key == "models/llm/weights.safetensors"


def test_the_s3_test_event_yields_nothing() -> None:
    assert object_events(body_of("s3_test_event_via_sqs.json")) == []


def test_a_moto_style_event_without_identity_fields_is_accepted() -> None:
    # Given an event as moto sends it: no identity, request/response elements, owner or versionId
    body = json.loads(body_of("s3_put_via_sqs.json"))
    record = body["Records"][0]
    for field in ("userIdentity", "requestParameters", "responseElements"):
        del record[field]
    del record["s3"]["bucket"]["ownerIdentity"]
    del record["s3"]["object"]["versionId"]
    record["s3"]["object"]["key"] = "a+dir%2Fmodel.pt"
    # When parsed, Then the key is decoded and the missing version is left for the pipeline to resolve
    (event,) = object_events(body)
    assert event.key == "a dir/model.pt"
    assert event.version_id is None and event.principal_id is None


def test_object_removed_events_are_not_scanned() -> None:
    body = json.loads(body_of("s3_put_via_sqs.json"))
    body["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert object_events(body) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "not an S3 event notification: Records"),
    ],
)
def test_junk_bodies_raise_a_clear_error(body: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        object_events(body)
