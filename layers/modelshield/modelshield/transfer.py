"""Uploading a local file to the ingest bucket: one PUT for small files, multipart for large ones.

A single PutObject is limited to 5 GB on S3, and model checkpoints are often larger, so files past
MULTIPART_THRESHOLD go up as a multipart upload (parts of at least PART_SIZE, at most MAX_PARTS of them).
boto3's transfer manager would do the same, but it does not return the response of the completing call,
and the upload's exact VersionId is what `upload --wait` must wait for: reading it back afterwards with
HeadObject could return a concurrent writer's version. So the parts go through crypto/multipart.py's
MultipartUpload (SHA-256 per part; aborted on any failure, so no orphaned parts linger and bill).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelshield.crypto.multipart import MAX_PARTS, MultipartUpload
from modelshield.progress import Progress

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 64 * 1024 * 1024  # memory per part in flight: one part
MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last


def part_size_for(size: int, preferred: int = PART_SIZE) -> int:
    """The part size that fits `size` into MAX_PARTS parts, never below S3's minimum."""
    return max(preferred, MIN_PART_SIZE, math.ceil(size / MAX_PARTS))


def upload_file(
    s3: Any,
    path: Path,
    *,
    bucket: str,
    key: str,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> str | None:
    """Upload `path` to s3://bucket/key; return the new object's VersionId (None if unversioned)."""
    size = path.stat().st_size
    extra: dict[str, Any] = {"Metadata": dict(metadata or {})}
    with path.open("rb") as body:
        if size <= multipart_threshold:
            response = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            if progress is not None:
                progress.advance(size)
            return response.get("VersionId")
        return _multipart(s3, body, bucket, key, extra, part_size_for(size, part_size), progress)


def _multipart(
    s3: Any,
    body: Any,
    bucket: str,
    key: str,
    extra: dict[str, Any],
    part_size: int,
    progress: Progress | None,
) -> str | None:
    with MultipartUpload(s3, bucket, key, extra=extra) as upload:  # aborted if anything below fails
        number = 1
        while chunk := body.read(part_size):
            upload.send(number, chunk)
            if progress is not None:
                progress.advance(len(chunk))
            number += 1
        response = upload.complete()
    return response.get("VersionId")
