"""Range-parallel envelope encryption of an S3 object into S3, and range-parallel verification.

One worker thread per range: a ranged GET of the plaintext, sealing (see `crypto.ranges`), and an
UploadPart with the part's CRC64NVME (S3 rejects a part damaged in transit). Range `i` is part `i + 1`;
part 1 (header + range 0) is sent last, once the plaintext digest -- computed in order while the ranges
stream through -- is in the header's encryption context. The data key is generated locally and wrapped
by KMS Encrypt with the final context (header after body, as `streams.encrypt_body_first`).

The parts' CRCs combine, in part order, into the object's full-object CRC64NVME, which S3 checks on
completion; afterwards HeadObject(ChecksumMode=ENABLED) must report the size and that checksum, or the
new version is deleted and IntegrityError raised -- the same verification as the sequential path, so a
range-encrypted object is trusted on exactly the same evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelshield.crypto.envelope import DEFAULT_FRAME_LENGTH, open_header, parse_header, sealed_frame_size
from modelshield.crypto.keyring import Keyring
from modelshield.crypto.multipart import MultipartUpload
from modelshield.crypto.ranges import DEFAULT_RANGE_SIZE, Range, RangeEncryptor, open_range, plan_ranges
from modelshield.crypto.s3 import (
    MAX_PARTS,
    MIN_PART_SIZE,
    S3Location,
    StoredCiphertext,
    _object_extra,
    _s3_call,
    verified_ciphertext,
)
from modelshield.crypto.streams import check_context, verify_digest
from modelshield.errors import EnvelopeError, IntegrityError, UsageError
from modelshield.ranged import RangedObject


def range_size_for(size: int, frame_length: int, range_size: int = DEFAULT_RANGE_SIZE) -> int:
    """A range size of whole frames, >= S3's minimum part, and few enough ranges for 10,000 parts."""
    wanted = max(range_size, MIN_PART_SIZE, -(-size // (MAX_PARTS - 1)))
    return -(-wanted // frame_length) * frame_length


def encrypt_object_by_range(
    source: RangedObject,
    *,
    s3: Any,
    keyring: Keyring,
    key_id: str,
    bucket: str,
    key: str,
    context: Mapping[str, str],
    digest_key: str | None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
    range_size: int = DEFAULT_RANGE_SIZE,
    workers: int = 4,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    plaintext_sha256: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> StoredCiphertext:
    """Encrypt the object behind `source` into s3://bucket/key by parallel ranges; verify what S3 stored.

    Two ways to the header, as for sequential encryption:
    * `digest_key` set (header after body): the plaintext SHA-256 computed while encrypting goes into
      the context under that key, and the local data key is wrapped by KMS Encrypt at the end;
    * `digest_key=None` (header first): the context is complete already (it carries the digest the
      caller computed), so KMS GenerateDataKey makes the data key up front -- the scan role needs no
      kms:Encrypt -- and `plaintext_sha256` is required.
    Either way `plaintext_sha256`, when given, must match the bytes read (IntegrityError, nothing stored).
    """
    if digest_key is None and plaintext_sha256 is None:
        raise UsageError("header-first encryption needs the plaintext_sha256 the context already carries")
    data_key = keyring.generate(key_id, context) if digest_key is None else None
    encryptor = RangeEncryptor(
        source.size,
        frame_length=frame_length,
        range_size=range_size_for(source.size, frame_length, range_size),
        data_key=data_key.plaintext if data_key is not None else None,
    )
    upload = MultipartUpload(s3, bucket, key, extra=_object_extra(tags, metadata))
    upload.start()
    held: dict[int, bytearray] = {}

    def emit(rng: Range, sealed: bytearray) -> None:
        if rng.index == 0:
            held[0] = sealed  # goes out last, behind the header
        else:
            upload.send(rng.index + 1, sealed)

    with upload:
        with _s3_call(f"GetObject s3://{source.bucket}/{source.key} (ranges)"):
            pending = encryptor.run(
                lambda r: source.fetch(r.start, r.end), emit, workers=workers, progress=progress
            )
        verify_digest(plaintext_sha256, pending.body.plaintext_sha256)
        if data_key is None:
            header, result = pending.finish(
                keyring=keyring, key_id=key_id, context=context, digest_key=digest_key
            )
        else:
            header, result = pending.finish_with(data_key, context)
        upload.send(1, header + held.pop(0))
        response = upload.complete()
    return verified_ciphertext(
        s3,
        bucket,
        key,
        response,
        result,
        str(upload.checksum),
        upload.part_sizes,
        upload.part_checksums,
    )


def verify_object_by_range(
    s3: Any,
    location: S3Location,
    *,
    keyring: Keyring,
    expected_context: Mapping[str, str] | None,
    digest_key: str | None = None,
    range_size: int | None = None,
    workers: int = 4,
) -> str:
    """Authenticate every frame of a stored message with parallel ranged reads; return the plaintext sha256.

    Nothing is published: each range is decrypted in memory, checked and dropped (hashed in order). Any
    failure -- a frame that does not authenticate, frames out of place, a wrong length, a digest that is
    not the one in the context -- is an EnvelopeError or IntegrityError naming the range.
    """
    with _s3_call(f"HeadObject {location.uri}"):
        head = s3.head_object(
            Bucket=location.bucket,
            Key=location.key,
            **({"VersionId": location.version_id} if location.version_id else {}),
        )
    reader = RangedObject(
        s3,
        location.bucket,
        location.key,
        size=int(head["ContentLength"]),
        version_id=location.version_id,
        etag=head.get("ETag"),
    )
    header, offset = parse_header(reader)
    check_context(header.context, expected_context, allow_extra=True)
    cipher = open_header(header, keyring.unwrap(header.encrypted_data_keys, header.context).plaintext)
    body_size = reader.size - offset
    # The body's layout follows from the plaintext size, which follows from the body size.
    plaintext_size = _plaintext_size(body_size, header.frame_length)
    size = range_size or range_size_for(plaintext_size, header.frame_length)
    ranges = plan_ranges(plaintext_size, frame_length=header.frame_length, range_size=size)
    digest = hashlib.sha256()

    def check(rng: Range) -> bytearray:
        start = offset + rng.body_offset
        return open_range(header, cipher, rng, reader.fetch(start, start + rng.sealed_size))

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="modelshield-verify") as pool:
        for plaintext in pool.map(check, ranges):
            digest.update(plaintext)
    actual = digest.hexdigest()
    if digest_key is not None:
        recorded = header.context.get(digest_key)
        if recorded is None:
            raise IntegrityError(
                f"{location.uri}: the encryption context has no {digest_key!r} to check against"
            )
        verify_digest(recorded, actual)
    return actual


def _plaintext_size(body_size: int, frame_length: int) -> int:
    """Invert the framing: regular frames of `frame_length`, then a final frame of the remainder."""
    regular = sealed_frame_size(frame_length, False)
    empty_final = sealed_frame_size(0, True)
    if body_size < empty_final:
        raise EnvelopeError("message body is shorter than one final frame: truncated")
    frames, rest = divmod(body_size - empty_final, regular)
    # `rest` is the final frame's plaintext length, which must be shorter than a whole frame.
    if rest >= frame_length:
        raise IntegrityError("message body length does not match its framing: truncated or extended")
    return frames * frame_length + rest
