"""Uploading a local file to the ingest bucket: one PUT for small files, multipart for large ones.

A single PutObject is limited to 5 GB on S3, and model checkpoints are often larger, so files past
MULTIPART_THRESHOLD go up as a multipart upload (parts of at least PART_SIZE, at most MAX_PARTS of them).
boto3's transfer manager would do the same, but it does not return the response of the completing call,
and the upload's exact VersionId is what `upload --wait` must wait for: reading it back afterwards with
HeadObject could return a concurrent writer's version. So the parts go through crypto/multipart.py's
MultipartUpload (a CRC64NVME per part; aborted on any failure, so no orphaned parts linger and bill).

A part is never held in memory: it is a window onto the file (scanning/streams.py's SubStream), read
once for its checksum and again as it is sent, a block at a time. Reading it into bytes instead cost two
part-sized buffers per part (botocore appends a bytes body to the request's headers before sending), and
how soon the allocator gave those back varied by machine: a 1 GiB upload peaked at 283 MiB here and at
900 MiB on CI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelshield.crypto import checksums
from modelshield.crypto.multipart import MAX_PARTS, MultipartUpload
from modelshield.errors import UsageError
from modelshield.progress import Progress
from modelshield.scanning.streams import SubStream

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 64 * 1024 * 1024  # memory per part in flight: one part
MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last
BLOCK = 1024 * 1024  # what a part's checksum reads at a time


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
    size = os.fstat(body.fileno()).st_size
    with MultipartUpload(s3, bucket, key, extra=extra) as upload:  # aborted if anything below fails
        for number, start in enumerate(range(0, size, part_size), start=1):
            part = FilePart(body, start, min(part_size, size - start))
            upload.send(number, part, crc=part.crc())
            if progress is not None:
                progress.advance(len(part))
        response = upload.complete()
    return response.get("VersionId")


class FilePart(SubStream):
    """A part of the file being uploaded: a window onto it (positions from 0, so botocore can size, sign,
    send and rewind it for a retry). A file that no longer has the part's bytes is an error, not a short
    part."""

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        got = super().readinto(buffer)
        if not got and self.tell() < len(self):
            name = getattr(self._base, "name", "the file")
            raise UsageError(f"{name} shrank while it was being uploaded: upload it again once it is written")
        return got

    def crc(self) -> int:
        """The part's CRC64NVME, read a block at a time; the position is back at 0 afterwards."""
        value, block = 0, bytearray(BLOCK)
        self.seek(0)
        while got := self.readinto(block):
            value = checksums.crc(memoryview(block)[:got], value)
        self.seek(0)
        return value
