"""One S3 multipart upload, written once for every writer (streamed encryption, range-parallel encryption,
server-side copies, rotation's re-wrap).

Why one helper: the rules are easy to get subtly wrong in each copy. Parts may be sent from several
threads and in any order, but CompleteMultipartUpload must list them in order with the ETag (and, when
the upload was created with checksums, the SHA-256) of each; any failure before completion must abort
the upload, or S3 keeps the orphaned parts (and bills them) indefinitely. With checksums on, each part
is sent with its SHA-256 so S3 rejects a part damaged in transit, and `composite_checksum` is what S3
will report for the object (SHA-256 over the parts' digests, "-N"), which the caller verifies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelshield.aws import unreachable
from modelshield.errors import AccessDenied, ArtifactNotFound, ModelShieldError, StorageError, UsageError

MAX_PARTS = 10_000  # S3: parts per multipart upload


def b64_sha256(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


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

    def __init__(self, s3: Any, bucket: str, key: str, *, extra: Mapping[str, Any], checksums: bool = True):
        self.s3, self.bucket, self.key = s3, bucket, key
        self._extra = dict(extra)
        self._checksums = checksums
        self.upload_id: str | None = None
        self._parts: dict[int, tuple[int, str | None, str]] = {}  # number -> (size, sha256, etag)
        self._lock = threading.Lock()

    # -- parts ---------------------------------------------------------------------------------------
    def start(self) -> str:
        with self._lock:
            if self.upload_id is None:
                options = {"ChecksumAlgorithm": "SHA256"} if self._checksums else {}
                with s3_call("CreateMultipartUpload"):
                    created = self.s3.create_multipart_upload(
                        Bucket=self.bucket, Key=self.key, **options, **self._extra
                    )
                self.upload_id = str(created["UploadId"])
            return self.upload_id

    def send(self, number: int, body: bytes | bytearray, checksum: str | None = None) -> str | None:
        """Upload part `number` (with its SHA-256 when checksums are on); returns that checksum."""
        self._check_number(number)
        upload_id = self.start()
        digest = (checksum or b64_sha256(body)) if self._checksums else None
        options = {"ChecksumSHA256": digest} if digest else {}
        with s3_call(f"UploadPart {number}"):
            response = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(body),
                **options,
            )
        self._record(number, len(body), digest, str(response["ETag"]))
        return digest

    def copy(
        self, number: int, source: Mapping[str, str], start: int, end: int, checksum: str | None = None
    ) -> None:
        """Part `number` is bytes [start, end) of `source` ({"Bucket", "Key", "VersionId"}), copied by S3."""
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
        digest = (checksum or result.get("ChecksumSHA256")) if self._checksums else None
        self._record(number, end - start, digest, str(result["ETag"]))

    # -- the end ---------------------------------------------------------------------------------------
    def complete(self) -> dict[str, Any]:
        numbers = sorted(self._parts)
        parts = []
        for n in numbers:
            _, digest, etag = self._parts[n]
            parts.append({"PartNumber": n, "ETag": etag, **({"ChecksumSHA256": digest} if digest else {})})
        with s3_call("CompleteMultipartUpload"):
            response = self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        self.upload_id = None
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
        return tuple(str(self._parts[n][1]) for n in sorted(self._parts))

    @property
    def composite_checksum(self) -> str:
        """The object's SHA-256 as S3 reports it for a multipart upload: over the part digests, "-N"."""
        joined = b"".join(base64.b64decode(c) for c in self.part_checksums)
        return f"{base64.b64encode(hashlib.sha256(joined).digest()).decode('ascii')}-{len(self._parts)}"

    def _record(self, number: int, size: int, digest: str | None, etag: str) -> None:
        with self._lock:
            self._parts[number] = (size, digest, etag)

    @staticmethod
    def _check_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise UsageError(f"object needs more than {MAX_PARTS} parts: use a larger part size")
