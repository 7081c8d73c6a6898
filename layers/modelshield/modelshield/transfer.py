"""Uploading a local file to the ingest bucket: one PUT for small files, multipart for large ones.

A single PutObject is limited to 5 GB on S3, and model checkpoints are often larger, so files past
MULTIPART_THRESHOLD go up as a multipart upload (parts of at least PART_SIZE, at most MAX_PARTS of them).
boto3's transfer manager would do the same, but it does not return the response of the completing call,
and the upload's exact VersionId is what `upload --wait` must wait for: reading it back afterwards with
HeadObject could return a concurrent writer's version. So the parts go through crypto/multipart.py's
MultipartUpload (a CRC64NVME per part; aborted on any failure, so no orphaned parts linger and bill).

A part is never held in memory: it is a FileWindow onto the file, read once for its checksum and again
as it is sent, a block at a time. Reading it into bytes instead cost two part-sized buffers per part
(botocore appends a bytes body to the request's headers before sending), and how soon the allocator
gave those back varied by machine: a 1 GiB upload peaked at 283 MiB here and at 900 MiB on CI.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelshield.crypto import checksums
from modelshield.crypto.multipart import MAX_PARTS, MultipartUpload
from modelshield.errors import UsageError
from modelshield.progress import Progress

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
            part = FileWindow(body, start, min(part_size, size - start))
            upload.send(number, part, crc=part.crc())
            if progress is not None:
                progress.advance(len(part))
        response = upload.complete()
    return response.get("VersionId")


class FileWindow(io.RawIOBase):
    """Bytes [start, start + length) of an open binary file, as a seekable read-only stream whose
    positions start at 0: a request body botocore can size, sign, send and rewind for a retry."""

    def __init__(self, file: Any, start: int, length: int):
        super().__init__()
        self._file, self._start, self._length, self._position = file, start, length, 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._length - self._position)
        if wanted <= 0:
            return 0
        self._file.seek(self._start + self._position)
        got = self._file.readinto(view[:wanted])
        if not got:
            name = getattr(self._file, "name", "the file")
            raise UsageError(f"{name} shrank while it was being uploaded: upload it again once it is written")
        self._position += got
        return int(got)

    def crc(self) -> int:
        """The window's CRC64NVME, read a block at a time; the position is back at 0 afterwards."""
        value, block = 0, bytearray(BLOCK)
        self.seek(0)
        while got := self.readinto(block):
            value = checksums.crc(memoryview(block)[:got], value)
        self.seek(0)
        return value
