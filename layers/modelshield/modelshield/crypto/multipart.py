"""One S3 multipart upload, written once for every writer (streamed encryption, range-parallel encryption,
server-side copies, rotation's re-wrap).

Why one helper: the rules are easy to get subtly wrong in each copy. Parts may be sent from several
threads and in any order, but CompleteMultipartUpload must list them in order with the ETag (and, when
the CRC64NVME) of each; any failure before completion must abort the upload, or S3 keeps the orphaned
parts (and bills them) indefinitely. Every upload carries a full-object CRC64NVME checksum
(crypto/checksums.py): each part is sent with its own, so S3 rejects a part damaged in transit, and
CompleteMultipartUpload names the whole object's value (kept in `checksum`, combined from the parts in
order), so S3 refuses to assemble an object whose bytes are not the ones we produced. HeadObject then
reports that one value, whatever the part layout, and the caller compares it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelshield.aws import unreachable
from modelshield.crypto import checksums
from modelshield.errors import (
    AccessDenied,
    ArtifactNotFound,
    IntegrityError,
    ModelShieldError,
    StorageError,
    UsageError,
)

MAX_PARTS = 10_000  # S3: parts per multipart upload


@contextlib.contextmanager
def s3_call(action: str) -> Iterator[None]:
    """S3 errors inside the block become ModelShield errors naming `action` (not found, denied, other)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, action) from None


def s3_error(exc: Exception, action: str) -> ModelShieldError:
    if (down := unreachable(exc)) is not None:  # no endpoint answered: the same "no stack" line everywhere
        return down
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code", type(exc).__name__))
    message = f"S3 {action} failed: {code}: {error.get('Message') or exc}"
    if code in {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"}:
        return ArtifactNotFound(message)
    if code in {"AccessDenied", "403", "Forbidden"}:
        return AccessDenied(message)
    return StorageError(message)


class MultipartUpload:
    """Create lazily, send or copy parts (thread-safe), complete in order, or abort. Use it as a context
    manager: leaving the block with an exception aborts the upload."""

    def __init__(self, s3: Any, bucket: str, key: str, *, extra: Mapping[str, Any]):
        self.s3, self.bucket, self.key = s3, bucket, key
        self._extra = dict(extra)
        self.upload_id: str | None = None
        self.checksum: str | None = None  # the object's CRC64NVME, as `complete` asked S3 to check it
        self._parts: dict[int, tuple[int, int | None, str]] = {}  # number -> (size, crc64nvme, etag)
        self._lock = threading.Lock()

    # -- parts ---------------------------------------------------------------------------------------
    def start(self) -> str:
        with self._lock:
            if self.upload_id is None:
                with s3_call("CreateMultipartUpload"):
                    created = self.s3.create_multipart_upload(
                        Bucket=self.bucket,
                        Key=self.key,
                        ChecksumAlgorithm=checksums.ALGORITHM,
                        ChecksumType=checksums.TYPE,
                        **self._extra,
                    )
                self.upload_id = str(created["UploadId"])
            return self.upload_id

    def send(self, number: int, body: Any, *, crc: int | None = None) -> str:
        """Upload part `number` with its CRC64NVME; returns that checksum (encoded). `body` is bytes, or a
        seekable binary stream whose checksum the caller read as `crc` (S3 refuses the part if the bytes
        sent differ from it)."""
        self._check_number(number)
        upload_id = self.start()
        value = checksums.crc(body) if crc is None else crc
        encoded = checksums.encode(value)
        with s3_call(f"UploadPart {number}"):
            response = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(body) if crc is None else body,
                ChecksumCRC64NVME=encoded,
            )
        self._record(number, len(body), value, str(response["ETag"]))
        return encoded

    def copy(
        self, number: int, source: Mapping[str, str], start: int, end: int, checksum: str | None = None
    ) -> None:
        """Part `number` is bytes [start, end) of `source` ({"Bucket", "Key", "VersionId"}), copied by S3.
        Its checksum is `checksum` when the caller knows it, else the one S3 reports for the part (AWS does;
        moto does not, and then `complete` needs the object's checksum from the caller)."""
        self._check_number(number)
        upload_id = self.start()
        with s3_call(f"UploadPartCopy {number}"):
            copied = self.s3.upload_part_copy(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=dict(source),
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
        result = copied["CopyPartResult"]
        reported = checksum or result.get(checksums.FIELD)
        value = checksums.decode(reported) if reported else None
        self._record(number, end - start, value, str(result["ETag"]))

    # -- the end ---------------------------------------------------------------------------------------
    def complete(self, expected: str | None = None) -> dict[str, Any]:
        """Assemble the parts; S3 checks them against the object's checksum: `expected` when given (it
        must agree with the parts' combination where that is known), else that combination. The value
        is kept in `checksum`, what HeadObject must report afterwards."""
        full = self._combined()
        if expected is not None and full is not None and expected != full:
            raise IntegrityError(
                f"s3://{self.bucket}/{self.key}: the parts combine to CRC64NVME {full}, expected {expected}"
            )
        full = expected or full
        if full is None:
            raise IntegrityError(
                f"s3://{self.bucket}/{self.key}: no checksum for a copied part and none given for the object"
            )
        parts = []
        for n in sorted(self._parts):
            _, value, etag = self._parts[n]
            part = {"PartNumber": n, "ETag": etag}
            if value is not None:
                part[checksums.FIELD] = checksums.encode(value)
            parts.append(part)
        with s3_call("CompleteMultipartUpload"):
            response = self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
                ChecksumType=checksums.TYPE,
                ChecksumCRC64NVME=full,
            )
        self.upload_id = None
        self.checksum = full
        return dict(response)

    def abort(self) -> None:
        """Best effort: the original error is what matters, and S3 lifecycle rules catch what remains."""
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    # -- what S3 will report ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.upload_id is not None

    @property
    def part_sizes(self) -> tuple[int, ...]:
        return tuple(self._parts[n][0] for n in sorted(self._parts))

    @property
    def part_checksums(self) -> tuple[str, ...]:
        """Each part's CRC64NVME, encoded ("" where a copied part's is unknown)."""
        return tuple(
            "" if (value := self._parts[n][1]) is None else checksums.encode(value)
            for n in sorted(self._parts)
        )

    def _combined(self) -> str | None:
        """The parts' CRC64NVMEs combined in part order (FULL_OBJECT); None if a copied part's is unknown."""
        total = 0  # the CRC of no bytes; combine(0, b, n) == b
        for n in sorted(self._parts):
            size, value, _ = self._parts[n]
            if value is None:
                return None
            total = checksums.combine(total, value, size)
        return checksums.encode(total)

    def _record(self, number: int, size: int, value: int | None, etag: str) -> None:
        with self._lock:
            self._parts[number] = (size, value, etag)

    @staticmethod
    def _check_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise UsageError(f"object needs more than {MAX_PARTS} parts: use a larger part size")
