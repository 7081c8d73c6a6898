"""Envelope encryption into and out of S3, with the stored object verified before it is trusted.

Upload: frames are grouped into parts of a whole number of frames (>= 5 MiB, S3's minimum for every
part but the last), each sent with its CRC64NVME so S3 rejects a part damaged in transit, and the upload
completed with the whole object's CRC64NVME (FULL_OBJECT, crypto/checksums.py) for S3 to check; a message
smaller than one part is a single PUT with that checksum. Afterwards HeadObject(ChecksumMode=ENABLED)
must report the size and the full-object checksum we computed while uploading, or the new version is
deleted and IntegrityError raised. Any failure before completion
aborts the multipart upload, so no orphaned parts linger.

Whole frames per part keep byte ranges meaningful: part 1 is header + frames, the others are frames
only, so a re-wrap can copy parts 2..n server-side and a large artifact can be encrypted by range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from modelshield.crypto import checksums
from modelshield.crypto.envelope import (
    DEFAULT_FRAME_LENGTH,
    EnvelopeError,
    Header,
    parse_header,
    sealed_frame_size,
)
from modelshield.crypto.keyring import Keyring
from modelshield.crypto.multipart import MAX_PARTS, MultipartUpload
from modelshield.crypto.multipart import s3_call as _s3_call
from modelshield.crypto.streams import (
    DecryptResult,
    EncryptResult,
    Expectation,
    decrypt_file,
    decrypt_to,
    encrypt_body_first,
    encrypt_stream,
    verify_digest,
)
from modelshield.errors import ArtifactNotFound, IntegrityError, UsageError

MIN_PART_SIZE = 5 * 1024 * 1024  # S3: minimum size of every part except the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024  # target part size; rounded up to whole frames
ENVELOPE_MAGIC = b"\x02\x04\x78"  # format v2 + suite 0x0478: the first bytes of every message we write


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        suffix = f"?versionId={self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{suffix}"


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/key[?versionId=...]`. Only a trailing `?versionId=` query is special."""
    if not uri.startswith("s3://"):
        raise UsageError(f"not an s3:// URI: {uri}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    version_id = None
    head, sep, query = key.rpartition("?versionId=")
    if sep and query and "/" not in query and "&" not in query:
        key, version_id = head, urllib.parse.unquote(query)
    if not bucket or not key:
        raise UsageError(f"an S3 URI needs a bucket and a key: {uri}")
    return S3Location(bucket, key, version_id)


@dataclass(frozen=True)
class StoredCiphertext:
    """An encrypted object as verified in S3."""

    bucket: str
    key: str
    version_id: str | None
    size: int
    checksum: str  # full-object CRC64NVME as S3 reports it (base64), whatever the part layout
    key_arn: str
    message_id: str
    plaintext_sha256: str | None = None
    plaintext_size: int = 0
    header_length: int = 0
    frame_length: int = DEFAULT_FRAME_LENGTH
    part_sizes: tuple[int, ...] = ()
    part_checksums: tuple[str, ...] = ()
    etag: str | None = None

    @property
    def location(self) -> S3Location:
        return S3Location(self.bucket, self.key, self.version_id)


def frames_per_part(
    frame_length: int, part_size: int = DEFAULT_PART_SIZE, total_plaintext: int | None = None
) -> int:
    """Frames per part: at least 5 MiB of ciphertext, and few enough parts for S3's 10,000 limit."""
    sealed = sealed_frame_size(frame_length, False)
    frames = max(-(-max(part_size, MIN_PART_SIZE) // sealed), 1)
    if total_plaintext is not None:
        total_frames = total_plaintext // frame_length + 1
        frames = max(frames, -(-total_frames // (MAX_PARTS - 1)))
    return frames


class _PartSink:
    """Receives whole-frame writes and ships them as S3 parts (or one PUT), checksumming each."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        min_part: int,
        extra: Mapping[str, Any],
        max_concurrency: int,
        hold_first: bool,
    ) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._min_part = min_part
        self._extra = dict(extra)
        self._hold_first = hold_first
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._held: bytes | None = None
        self._upload = MultipartUpload(s3, bucket, key, extra=extra)
        self._sent: list[Future[Any]] = []
        self._next_part = 1
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="modelshield-upload")
        self._slots = threading.BoundedSemaphore(max_concurrency + 1)  # bounds memory held by uploads

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= self._min_part:
            self._flush()
        return len(chunk)

    def _take(self) -> bytes:
        part = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        return part

    def _flush(self) -> None:
        part = self._take()
        number = self._next_part
        self._next_part += 1
        if number == 1 and self._hold_first:
            self._held = part  # sent last, once the header that goes in front of it exists
            return
        self._send(number, part)

    def _send(self, number: int, part: bytes) -> None:
        if number > MAX_PARTS:
            raise UsageError(f"object needs more than {MAX_PARTS} parts: use a larger part size")
        self._upload.start()
        for sent in self._sent:  # fail fast: stop encrypting once a part has failed
            if sent.done() and sent.exception() is not None:
                sent.result()
        self._slots.acquire()
        future = self._pool.submit(self._upload.send, number, part)
        future.add_done_callback(lambda _: self._slots.release())
        self._sent.append(future)

    def finish(self, header: bytes | None) -> tuple[dict[str, Any], str, tuple[int, ...], tuple[str, ...]]:
        """Send what is left; return (S3 response, expected checksum, part sizes, part checksums)."""
        tail = self._take()
        if not self._upload.started and (self._held is None or not tail):
            body = (header or b"") + (self._held or b"") + tail  # everything fits in one part: single PUT
            checksum = checksums.of(body)
            with _s3_call("PutObject"):
                response = self._s3.put_object(
                    Bucket=self._bucket,
                    Key=self._key,
                    Body=body,
                    ChecksumAlgorithm=checksums.ALGORITHM,
                    ChecksumCRC64NVME=checksum,
                    **self._extra,
                )
            return dict(response), checksum, (len(body),), (checksum,)
        if self._held is not None:
            self._send(1, (header or b"") + self._held)
        if tail:
            self._send(self._next_part, tail)
        for future in self._sent:
            future.result()
        response = self._upload.complete()
        upload = self._upload
        return response, str(upload.checksum), upload.part_sizes, upload.part_checksums

    def abort(self) -> None:
        for future in self._sent:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._upload.abort()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def verify_stored(s3: Any, bucket: str, key: str, version_id: str | None, size: int, checksum: str) -> str:
    """HeadObject must report our size and full-object checksum (IntegrityError otherwise); returns the
    checksum as S3 reports it. Every writer of vault, quarantine and in-place objects checks with it."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        params["VersionId"] = version_id
    with _s3_call("HeadObject (verify)"):
        head = s3.head_object(**params)
    reported = head.get(checksums.FIELD)
    if head.get("ContentLength") != size:
        raise IntegrityError(
            f"s3://{bucket}/{key}: S3 stores {head.get('ContentLength')} bytes, we wrote {size}"
        )
    kind = head.get("ChecksumType", checksums.TYPE)  # moto leaves it out for a single PUT
    if reported != checksum or kind != checksums.TYPE:
        raise IntegrityError(
            f"s3://{bucket}/{key}: S3 reports {checksums.ALGORITHM} {reported!r} ({kind}), "
            f"we computed {checksum!r} ({checksums.TYPE})"
        )
    return str(reported)


def _version_of(response: Mapping[str, Any]) -> str | None:
    """The version S3 created; "null" (unversioned bucket) means none to address."""
    version_id = response.get("VersionId")
    return None if version_id in (None, "", "null") else str(version_id)


def _delete_quietly(s3: Any, bucket: str, key: str, version_id: str | None) -> None:
    params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
    with contextlib.suppress(Exception):
        s3.delete_object(**params)


def _object_extra(tags: Mapping[str, str] | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"ContentType": "application/octet-stream"}
    if tags:
        extra["Tagging"] = urllib.parse.urlencode(dict(tags))
    if metadata:
        extra["Metadata"] = dict(metadata)
    return extra


def encrypt_to_s3(
    source: BinaryIO | Path,
    *,
    s3: Any,
    keyring: Keyring,
    key_id: str,
    bucket: str,
    key: str,
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    plaintext_sha256: str | None = None,
    context_digest_key: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = 4,
) -> StoredCiphertext:
    """Encrypt `source` into s3://bucket/key, verify what S3 stored, and return its version.

    `plaintext_sha256`: the digest the pipeline computed earlier; a different input is IntegrityError
    and nothing is stored. `context_digest_key`: header after body -- the digest computed while
    encrypting is put into the context under this key, and part 1 (header + first frames) is sent last.
    """
    if isinstance(source, Path | str):
        path = Path(source)
        if not path.is_file():
            raise ArtifactNotFound(f"input file {path} does not exist")
        with open(path, "rb") as handle:
            total = path.stat().st_size
            return encrypt_to_s3(
                handle,
                s3=s3,
                keyring=keyring,
                key_id=key_id,
                bucket=bucket,
                key=key,
                context=context,
                frame_length=frame_length,
                tags=tags,
                metadata=metadata,
                plaintext_sha256=plaintext_sha256,
                context_digest_key=context_digest_key,
                part_size=max(part_size, -(-total // (MAX_PARTS - 1))),
                max_concurrency=max_concurrency,
            )
    per_part = frames_per_part(frame_length, part_size)
    sink = _PartSink(
        s3,
        bucket,
        key,
        min_part=per_part * sealed_frame_size(frame_length, False),
        extra=_object_extra(tags, metadata),
        max_concurrency=max(1, max_concurrency),
        hold_first=context_digest_key is not None,
    )
    try:
        if context_digest_key is None:
            data_key = keyring.generate(key_id, context)
            result: EncryptResult = encrypt_stream(
                source,
                sink,
                data_key=data_key,
                context=context,
                frame_length=frame_length,
                plaintext_sha256=plaintext_sha256,
                frames_per_write=per_part,
            )
            header: bytes | None = None
        else:
            pending = encrypt_body_first(source, sink, frame_length=frame_length, frames_per_write=per_part)
            verify_digest(plaintext_sha256, pending.body.plaintext_sha256)
            header, result = pending.finish(
                keyring=keyring, key_id=key_id, context=context, digest_key=context_digest_key
            )
        response, checksum, sizes, part_checksums = sink.finish(header)
    except BaseException:
        sink.abort()
        raise
    finally:
        sink.close()
    return verified_ciphertext(s3, bucket, key, response, result, checksum, sizes, part_checksums)


def verified_ciphertext(
    s3: Any,
    bucket: str,
    key: str,
    response: Mapping[str, Any],
    result: EncryptResult,
    checksum: str,
    part_sizes: tuple[int, ...],
    part_checksums: tuple[str, ...],
) -> StoredCiphertext:
    """What an upload stored, once HeadObject confirms its size and checksum; deleted (IntegrityError)
    otherwise, so no unverified object is ever left behind."""
    version_id = _version_of(response)
    try:
        reported = verify_stored(s3, bucket, key, version_id, result.ciphertext_size, checksum)
    except BaseException:
        _delete_quietly(s3, bucket, key, version_id)
        raise
    return StoredCiphertext(
        bucket=bucket,
        key=key,
        version_id=version_id,
        size=result.ciphertext_size,
        checksum=reported,
        key_arn=result.key_arn,
        message_id=result.message_id,
        plaintext_sha256=result.plaintext_sha256,
        plaintext_size=result.plaintext_size,
        header_length=result.header_length,
        frame_length=result.frame_length,
        part_sizes=part_sizes,
        part_checksums=part_checksums,
        etag=response.get("ETag"),
    )


def open_object(s3: Any, location: S3Location, **extra: Any) -> Any:
    """The streaming body of an object version; S3 errors become ModelShield errors."""
    params: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key, **extra}
    if location.version_id:
        params["VersionId"] = location.version_id
    with _s3_call(f"GetObject {location.uri}"):
        return s3.get_object(**params)["Body"]


def decrypt_s3_to(
    bucket: str, key: str, version_id: str | None, dest: Path, *, s3: Any, expect: Expectation
) -> str:
    """Decrypt an S3 object to `dest` (published only once verified); return the plaintext sha256."""
    result = _decrypt_location(S3Location(bucket, key, version_id), Path(dest), s3=s3, expect=expect)
    return str(result.plaintext_sha256)


def _decrypt_location(location: S3Location, dest: Path, *, s3: Any, expect: Expectation) -> DecryptResult:
    body = open_object(s3, location)
    try:
        with _s3_call(f"GetObject {location.uri} (reading)"):
            return decrypt_to(body, dest, expect=expect)
    finally:
        with contextlib.suppress(Exception):
            body.close()


def open_model(source: str | Path, dest: Path, *, expect: Expectation, s3: Any = None) -> DecryptResult:
    """Decrypt a model from a local file or `s3://bucket/key[?versionId=...]` to `dest`."""
    if isinstance(source, str) and source.startswith("s3://"):
        if s3 is None:
            raise UsageError(f"{source}: pass an S3 client (s3=modelshield.wiring.s3_client())")
        return _decrypt_location(parse_s3_uri(source), Path(dest), s3=s3, expect=expect)
    return decrypt_file(Path(source), Path(dest), expect=expect)


# -- in-place encryption ----------------------------------------------------------------------------
def _is_envelope(s3: Any, location: S3Location) -> bool:
    body = open_object(s3, location, Range=f"bytes=0-{len(ENVELOPE_MAGIC) - 1}")
    try:
        return bool(body.read(len(ENVELOPE_MAGIC)) == ENVELOPE_MAGIC)
    finally:
        body.close()


def _copy_verified(s3: Any, staged: StoredCiphertext, key: str, extra: Mapping[str, Any]) -> StoredCiphertext:
    """Server-side copy of `staged` onto `key` with the same part layout, so the checksum must match."""
    source = {
        "Bucket": staged.bucket,
        "Key": staged.key,
        **({"VersionId": staged.version_id} if staged.version_id else {}),
    }
    bucket = staged.bucket
    if len(staged.part_sizes) == 1:
        with _s3_call("CopyObject"):
            response = s3.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource=source,
                ChecksumAlgorithm=checksums.ALGORITHM,
                MetadataDirective="REPLACE",
                TaggingDirective="REPLACE",
                **extra,
            )
        version_id = _version_of(response)
    else:
        with MultipartUpload(s3, bucket, key, extra=extra) as upload:
            offset = 0
            for number, (size, checksum) in enumerate(
                zip(staged.part_sizes, staged.part_checksums, strict=True), 1
            ):
                upload.copy(number, source, offset, offset + size, checksum=checksum)
                offset += size
            response = upload.complete(staged.checksum)
        version_id = _version_of(response)
    try:
        reported = verify_stored(s3, bucket, key, version_id, staged.size, staged.checksum)
    except BaseException:
        _delete_quietly(s3, bucket, key, version_id)
        raise
    return dataclasses.replace(staged, key=key, version_id=version_id, checksum=reported)


def encrypt_in_place(
    s3: Any,
    bucket: str,
    key: str,
    version_id: str | None,
    *,
    keyring: Keyring,
    key_id: str,
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
    plaintext_sha256: str | None = None,
    context_digest_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> StoredCiphertext:
    """Replace a plaintext object with its encryption; the plaintext goes only after the ciphertext verifies.

    Versioned bucket: `version_id` must be the current version (else a newer upload would be shadowed);
    the encrypted object becomes a new version, is verified, and only then is the plaintext version
    deleted -- never when it would be the only copy. Unversioned bucket: the ciphertext is written and
    verified under a staging key, copied server-side onto `key` with the same part layout (so S3's
    checksum must come out identical) and verified again; the staging object is then removed.
    """
    with _s3_call("GetBucketVersioning"):
        versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    with _s3_call(f"HeadObject s3://{bucket}/{key}"):
        current = s3.head_object(Bucket=bucket, Key=key)
    location = S3Location(bucket, key, version_id)
    if versioned:
        if not version_id:
            raise UsageError("the bucket is versioned: say which version to encrypt")
        if current.get("VersionId") != version_id:
            raise IntegrityError(
                f"{location.uri} is no longer the current version ({current.get('VersionId')} is); "
                "encrypting it would shadow the newer upload"
            )
    if _is_envelope(s3, location):
        raise UsageError(f"{location.uri} is already envelope-encrypted")
    options: dict[str, Any] = {
        "s3": s3,
        "keyring": keyring,
        "key_id": key_id,
        "bucket": bucket,
        "context": context,
        "frame_length": frame_length,
        "tags": tags,
        "metadata": metadata,
        "plaintext_sha256": plaintext_sha256,
        "context_digest_key": context_digest_key,
        "part_size": part_size,
    }
    body = open_object(s3, location)
    try:
        target = key if versioned else f"{key}.modelshield-staging-{uuid.uuid4().hex}"
        with _s3_call(f"GetObject {location.uri} (reading)"):
            stored = encrypt_to_s3(body, key=target, **options)
    finally:
        with contextlib.suppress(Exception):
            body.close()
    if versioned:
        if not stored.version_id or stored.version_id == version_id:
            raise IntegrityError(f"{location.uri}: S3 did not create a new version; the plaintext is kept")
        with _s3_call("DeleteObject (plaintext version)"):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        return stored
    try:
        with _s3_call(f"HeadObject s3://{bucket}/{key}"):
            still = s3.head_object(Bucket=bucket, Key=key)
        if still.get("ETag") != current.get("ETag"):
            raise IntegrityError(
                f"s3://{bucket}/{key} changed while it was being encrypted; it is left as is"
            )
        return _copy_verified(s3, stored, key, _object_extra(tags, metadata))
    finally:
        _delete_quietly(s3, bucket, stored.key, stored.version_id)


# -- reading envelopes in place: a header (and a little body) with ranged GETs ------------------------
HEADER_PROBE = 64 * 1024  # first read covers any usual header (context <= 64 KiB is the format's cap)
MAX_HEADER_BYTES = 2 * 1024 * 1024  # no header is larger: 64 KiB context + 8 data keys of 3 x 64 KiB


def parse_envelope_head(data: bytes) -> tuple[Header, int]:
    """The header at the start of `data` and its length (EnvelopeError if `data` holds no whole header)."""
    return parse_header(io.BytesIO(data))


def get_range(s3: Any, bucket: str, key: str, version: str | None, start: int, end: int) -> bytes:
    """Bytes [start, end) of one object version (one ranged GET)."""
    if end <= start:
        return b""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
    if version:
        params["VersionId"] = version
    body = s3.get_object(**params)["Body"]
    try:
        return bytes(body.read())
    finally:
        body.close()


def read_object_head(
    s3: Any,
    bucket: str,
    key: str,
    version: str | None,
    *,
    size: int | None = None,
    body_bytes: int = 0,
    on_bytes: Callable[[int], None] = lambda _n: None,
) -> bytes:
    """An envelope's header plus up to `body_bytes` of its body, with as few ranged GETs as possible."""
    if size is None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version:
            params["VersionId"] = version
        size = int(s3.head_object(**params)["ContentLength"])

    def fetch(start: int, end: int) -> bytes:
        data = get_range(s3, bucket, key, version, start, end)
        on_bytes(len(data))
        return data

    data = fetch(0, min(size, HEADER_PROBE + body_bytes))
    try:
        _, hlen = parse_envelope_head(data)
    except EnvelopeError:
        if len(data) >= min(size, MAX_HEADER_BYTES):
            raise
        data += fetch(len(data), min(size, MAX_HEADER_BYTES + body_bytes))
        _, hlen = parse_envelope_head(data)
    want = min(size, hlen + body_bytes)
    if len(data) < want:
        data += fetch(len(data), want)
    return data
