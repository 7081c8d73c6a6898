"""Uploads to the ingest bucket: one PUT for small files, multipart past the threshold, exact versions;
and `scan s3://...` reading an object through the same S3 client."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from modelshield.cli import main
from modelshield.crypto import checksums
from modelshield.errors import UsageError
from modelshield.progress import Progress
from modelshield.transfer import MIN_PART_SIZE, FilePart, part_size_for, upload_file
from modelshield.wiring import s3_client
from moto import mock_aws

EVIL_PICKLE = b"\x80\x02cos\nsystem\nX\n\x00\x00\x00echo pwned\x85R."


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="ingest")
        boto3.client("s3").put_bucket_versioning(
            Bucket="ingest", VersioningConfiguration={"Status": "Enabled"}
        )
        yield "ingest"


def test_a_large_file_goes_up_in_parts_and_the_exact_new_version_is_returned(
    bucket: str, tmp_path: Path
) -> None:
    # Given a file past the multipart threshold (small here: 11 MiB over a 1 MiB threshold)
    path = tmp_path / "big.bin"
    data = os.urandom(MIN_PART_SIZE * 2 + 1024 * 1024)
    path.write_bytes(data)
    s3 = s3_client()
    bar = Progress(len(data), phase="uploading", enabled=False)
    # When it is uploaded
    version = upload_file(
        s3,
        path,
        bucket=bucket,
        key="m/big.bin",
        metadata={"license": "mit"},
        progress=bar,
        multipart_threshold=1024 * 1024,
        part_size=MIN_PART_SIZE,
    )
    # Then S3 holds it as a 3-part object under that exact version, with the metadata, bytes intact
    head = s3.head_object(Bucket=bucket, Key="m/big.bin", VersionId=version)
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"] == {"license": "mit"}
    body = s3.get_object(Bucket=bucket, Key="m/big.bin", VersionId=version)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    # And the progress saw every byte
    assert bar.done == len(data)


def test_a_failed_multipart_upload_is_aborted(bucket: str, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(MIN_PART_SIZE + 10))
    s3 = s3_client()
    # Given a connection that fails at the completing call
    original = s3.complete_multipart_upload

    def refuse(**kwargs: object) -> None:
        raise RuntimeError("connection reset")

    s3.complete_multipart_upload = refuse
    with pytest.raises(RuntimeError):
        upload_file(s3, path, bucket=bucket, key="m/x.bin", multipart_threshold=1, part_size=MIN_PART_SIZE)
    s3.complete_multipart_upload = original
    # Then no upload is left open
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_part_is_a_window_onto_the_file_that_rewinds_for_a_retry(tmp_path: Path) -> None:
    # Given a file and a window onto bytes [100, 1100) of it
    data = os.urandom(4096)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with path.open("rb") as file:
        window = FilePart(file, 100, 1000)
        # Then its checksum is that of those bytes, and it is sized from its own start
        assert window.crc() == checksums.crc(data[100:1100])
        assert len(window) == 1000 and window.seek(0, os.SEEK_END) == 1000
        # And read, rewound and read again (as botocore does to sign, then retry) it gives those bytes
        window.seek(0)
        assert window.read(10) == data[100:110] and window.tell() == 10
        window.seek(0)
        assert window.read() == data[100:1100] and window.read(5) == b""


def test_a_file_that_shrinks_while_it_goes_up_is_a_clear_error(tmp_path: Path) -> None:
    # Given a window onto bytes the file no longer has
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    with path.open("rb") as file:
        window = FilePart(file, 0, 1000)
        # When its checksum is read
        with pytest.raises(UsageError, match="shrank while it was being uploaded"):
            window.crc()


def test_part_sizes_fit_s3s_limits() -> None:
    assert part_size_for(10) == 64 * 1024 * 1024
    fifty_tb = 50 * 1024**4
    assert part_size_for(fifty_tb) * 10_000 >= fifty_tb


def test_scan_reads_s3_uris(bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a malicious pickle in S3
    version = boto3.client("s3").put_object(Bucket=bucket, Key="m/evil.pkl", Body=EVIL_PICKLE)["VersionId"]
    # When it is scanned by URI (latest, and a named version)
    code = main(["scan", f"s3://{bucket}/m/evil.pkl", "--format", "json"])
    result = json.loads(capsys.readouterr().out)["results"][0]
    # Then it is blocked, reported under its URI
    assert code == 1 and result["verdict"] == "BLOCKED" and result["path"] == f"s3://{bucket}/m/evil.pkl"
    assert main(["scan", f"s3://{bucket}/m/evil.pkl?versionId={version}"]) == 1
    capsys.readouterr()
    # And a missing object is one clear line, exit 2
    assert main(["scan", f"s3://{bucket}/m/nope.pkl"]) == 2
    err = capsys.readouterr().err
    assert "no such object" in err and "Traceback" not in err
