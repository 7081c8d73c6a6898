"""S3's full-object CRC64NVME checksum: compute it while bytes stream by, combine the parts' values,
encode it the way S3 reports it.

Why CRC64NVME: it is the one checksum S3 verifies over a *whole* multipart object (ChecksumType
FULL_OBJECT). SHA-256 on a multipart upload is only a composite (a digest of the parts' digests, "-N"),
which says nothing about the object as one byte string and changes with the part layout. A CRC is linear,
so the value of a concatenation follows from its pieces' values and lengths (`combine`): parts sent from
several threads, in any order, still give the object's checksum, and a sub-range's value follows from
the whole's minus a known prefix (`suffix`). Tamper-evidence is not this module's job (an attacker can
forge a CRC); AES-GCM and the envelope's authenticated header are. This catches damage in transit and in
our own part bookkeeping, checked by S3 on write and by HeadObject after.

The arithmetic is awscrt's (the AWS Common Runtime, the same code botocore uses for this checksum).
"""

from __future__ import annotations

import base64

from awscrt import checksums as _crt

ALGORITHM = "CRC64NVME"
TYPE = "FULL_OBJECT"
FIELD = "ChecksumCRC64NVME"  # the request/response field S3 uses for it


def crc(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    """CRC64NVME of `data`, continuing from `previous` (the value of the bytes before it)."""
    return int(_crt.crc64nvme(data, previous))


def combine(first: int, second: int, second_length: int) -> int:
    """The CRC of A + B from crc(A), crc(B) and len(B)."""
    return int(_crt.combine_crc64nvme(first, second, second_length))


def suffix(whole: int, prefix: int, suffix_length: int) -> int:
    """crc(B) from crc(A + B), crc(A) and len(B): combine is affine, combine(a, b, n) = shift(a, n) ^ b."""
    return whole ^ combine(prefix, 0, suffix_length)


def encode(value: int) -> str:
    """As S3 sends it: base64 of the 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


def decode(text: str) -> int:
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 8:
        raise ValueError(f"not a CRC64NVME checksum: {text!r}")
    return int.from_bytes(raw, "big")


def of(data: bytes | bytearray | memoryview) -> str:
    """The encoded checksum of one byte string (a single PUT's x-amz-checksum-crc64nvme)."""
    return encode(crc(data))
