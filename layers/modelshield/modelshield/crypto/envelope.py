"""The AWS Encryption SDK message format, version 2, suite 0x0478 -- and nothing else.

Why this module exists: every artifact ModelShield protects is an AWS Encryption SDK message so that
the official SDKs (Python, Java, JS, C, CLI) can always decrypt it, but the official Python library runs
at under 1 GB/s here while AES-GCM itself runs at about 9 GB/s. So the format is implemented directly on
`cryptography`'s AESGCM and HKDF, in this one module, and proven against the library in the tests.

Security reasoning, in the order an attacker would try things:

* **One suite only.** We write and accept only `AES_256_GCM_HKDF_SHA512_COMMIT_KEY` (0x0478): AES-256-GCM
  with a per-message key derived by HKDF-SHA512, and key commitment. Anything else (older suites without
  commitment, signed suites, message format v1, non-framed bodies) is rejected on read rather than
  half-supported; there is no negotiation for an attacker to downgrade.
* **Per-message keys.** The data key from KMS is never used directly: HKDF(salt = the random 32-byte
  message id) derives the AES key, so even a reused data key never reuses a (key, IV) pair. IVs are then
  deterministic (the frame sequence number, zero for the header tag), which is safe because the key is
  unique to the message, and is checked on read, so a tampered IV field cannot go unnoticed.
* **Key commitment.** A second HKDF output, the commitment key, is stored in the header and compared in
  constant time before anything is decrypted. Without it a crafted message could decrypt to two different
  plaintexts under two data keys (GCM is not key-committing); with it, one message has one plaintext.
* **Authenticated header.** The header (including the encryption context and the wrapped data keys) is
  covered by a GCM tag under the derived key. The context is also sent to KMS, which binds the wrapped
  data key to it. The context is therefore authenticated twice -- but never *trusted*: callers compare it
  with what they expected (`streams.check_context`) before decrypting anything.
* **Framed body.** Each frame's AAD is (message id, "Frame"/"Final Frame", sequence number, length), so
  frames cannot be moved between messages, reordered, duplicated, dropped, or truncated without failing a
  tag or a sequence check; the explicit final frame makes truncation at a frame boundary detectable.
  Frames are independently authenticated, which is what lets callers stream with flat memory -- and why
  plaintext must be *staged* until the final frame verifies (see `streams.decrypt_to`).
* **Bounded parsing.** Every length read from the wire is checked against a `ReadLimits` bound before
  anything is allocated; the parser never trusts a declared size.

Reference: the AWS Encryption SDK specification, data-format/message-header.md, message-body.md,
message-body-aad.md and framework/algorithm-suites.md. The struct layouts below follow it field by field.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelshield.errors import EnvelopeError


class AlgorithmSuite(IntEnum):
    """Algorithm suite ids with their wire values. We implement exactly one."""

    AES_256_GCM_HKDF_SHA512_COMMIT_KEY = 0x0478  # committing, unsigned, message format v2


class ContentType(IntEnum):
    """Body layouts. Only FRAMED is written or read; NON_FRAMED is named so the error can say so."""

    NON_FRAMED = 0x01
    FRAMED = 0x02


# -- constants, each with the limit the specification puts on it -------------------------------------
MESSAGE_FORMAT_VERSION: Final = 0x02  # header "Version" byte for format v2
SUITE: Final = AlgorithmSuite.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
MESSAGE_ID_LENGTH: Final = 32  # v2 message id: 32 random bytes, also the HKDF salt
DATA_KEY_LENGTH: Final = 32  # suite 0x0478: 256-bit data key in, 256-bit AES key out
COMMITMENT_KEY_LENGTH: Final = 32  # suite 0x0478: "algorithm suite data" is the 32-byte commitment key
IV_LENGTH: Final = 12  # AES-GCM IV, 96 bits
TAG_LENGTH: Final = 16  # AES-GCM tag, 128 bits
MAX_UINT16: Final = 0xFFFF  # every length-prefixed header field is a uint16
MAX_CONTEXT_BYTES: Final = 0xFFFF  # the header's AAD-length field is a uint16
MAX_FRAME_LENGTH: Final = 2**31 - 1  # the reference implementations refuse larger frames
MAX_FRAME_COUNT: Final = 2**32 - 1  # sequence numbers are uint32 starting at 1; frames per message
FINAL_FRAME_MARKER: Final = 0xFFFFFFFF  # "Sequence Number End": the next frame is the final frame
DEFAULT_FRAME_LENGTH: Final = 4 * 1024 * 1024  # ModelShield's choice: 4 MiB frames
RESERVED_CONTEXT_PREFIX: Final = "aws-crypto-"  # context keys reserved for the SDK (e.g. signing key)
KMS_PROVIDER_ID: Final = "aws-kms"  # key provider id the official KMS keyrings write and look for

# Labels fixed by the specification (HKDF info and frame AAD).
_DERIVE_KEY_LABEL: Final = b"DERIVEKEY"
_COMMIT_KEY_LABEL: Final = b"COMMITKEY"
_FRAME_AAD_LABEL: Final = b"AWSKMSEncryptionClient Frame"
_FINAL_FRAME_AAD_LABEL: Final = b"AWSKMSEncryptionClient Final Frame"
_HEADER_IV: Final = bytes(IV_LENGTH)  # v2 header tag uses an all-zero IV (sequence number 0)

# -- wire structures (big-endian throughout) --------------------------------------------------------
_HEADER_START = struct.Struct(
    ">"
    "B"  # Version: 0x02
    "H"  # Algorithm Suite ID: 0x0478
    "32s"  # Message ID
    "H"  # AAD Length: byte length of the serialized encryption context (0 when empty)
)
_UINT16 = struct.Struct(">H")  # context pair count, EDK count and every length prefix
_HEADER_END = struct.Struct(
    ">"
    "B"  # Content Type: 0x02 framed
    "I"  # Frame Length: plaintext bytes per regular frame
    "32s"  # Algorithm Suite Data: the commitment key
)
_FRAME_START = struct.Struct(
    ">"
    "I"  # Sequence Number (or 0xFFFFFFFF, "Sequence Number End", announcing the final frame)
    "12s"  # IV: 8 zero bytes + the sequence number
)
_FINAL_FRAME_START = struct.Struct(
    ">"
    "I"  # Sequence Number End: 0xFFFFFFFF
    "I"  # Sequence Number
    "12s"  # IV
    "I"  # Encrypted Content Length (<= frame length)
)
_UINT32 = struct.Struct(">I")
_BODY_AAD_TAIL = struct.Struct(
    ">"
    "I"  # sequence number
    "Q"  # plaintext (= ciphertext) length of this frame
)
_SUITE_ID = struct.Struct(">H")  # suite id as it appears in the HKDF info


@dataclass(frozen=True)
class ReadLimits:
    """Bounds applied while parsing untrusted messages, before any allocation they would size."""

    max_frame_length: int = 64 * 1024 * 1024  # one frame buffer is allocated at this size
    max_encrypted_data_keys: int = 8  # each costs a KMS call; the spec allows 65535
    max_frames: int = MAX_FRAME_COUNT
    max_context_bytes: int = MAX_CONTEXT_BYTES
    max_plaintext_bytes: int | None = None  # None: no bound beyond frames x frame length


DEFAULT_LIMITS: Final = ReadLimits()


@dataclass(frozen=True)
class EncryptedDataKey:
    """One wrapped copy of the data key. KMS: provider "aws-kms", info = the key ARN as KMS returned it."""

    provider_id: str
    provider_info: bytes
    ciphertext: bytes

    @property
    def key_arn(self) -> str | None:
        """The KMS key ARN this copy is wrapped under, or None for other providers."""
        if self.provider_id != KMS_PROVIDER_ID:
            return None
        try:
            return self.provider_info.decode("utf-8")
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True)
class Header:
    """A parsed (or built) v2 header. `body` is the exact bytes the auth tag covers."""

    message_id: bytes
    context: Mapping[str, str]
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    frame_length: int
    commitment_key: bytes
    auth_tag: bytes
    body: bytes = field(repr=False)
    suite: AlgorithmSuite = SUITE

    @property
    def length(self) -> int:
        """Bytes the header occupies on the wire; the body (frames) starts at this offset."""
        return len(self.body) + TAG_LENGTH

    def to_bytes(self) -> bytes:
        return self.body + self.auth_tag


# -- encryption context -----------------------------------------------------------------------------
def serialize_context(context: Mapping[str, str]) -> bytes:
    """Canonical encoding: pair count, then (key, value) pairs sorted by key bytes, each uint16-prefixed.

    Canonical so that the same context always yields the same bytes (it is authenticated, and KMS sees
    the same map); an empty context is the empty string, as the specification requires.
    """
    if not context:
        return b""
    if len(context) > MAX_UINT16:
        raise EnvelopeError(f"encryption context has {len(context)} entries; the format allows {MAX_UINT16}")
    pairs = []
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EnvelopeError("encryption context keys and values must be strings")
        try:
            pairs.append((key.encode("utf-8"), value.encode("utf-8")))
        except UnicodeEncodeError:
            raise EnvelopeError("encryption context keys and values must be valid Unicode") from None
    pairs.sort(key=lambda pair: pair[0])
    out = bytearray(_UINT16.pack(len(pairs)))
    for key_bytes, value_bytes in pairs:
        if len(key_bytes) > MAX_UINT16 or len(value_bytes) > MAX_UINT16:
            raise EnvelopeError("an encryption context key or value exceeds 65535 bytes")
        out += _UINT16.pack(len(key_bytes)) + key_bytes + _UINT16.pack(len(value_bytes)) + value_bytes
    if len(out) > MAX_CONTEXT_BYTES:
        raise EnvelopeError(f"serialized encryption context is {len(out)} bytes; the format allows 65535")
    return bytes(out)


def parse_context(data: bytes) -> dict[str, str]:
    """Inverse of `serialize_context`; accepts only the canonical encoding (sorted, unique, exact length)."""
    if not data:
        return {}
    view = memoryview(data)
    if len(view) < _UINT16.size:
        raise EnvelopeError("encryption context is truncated")
    (count,) = _UINT16.unpack_from(view, 0)
    if count == 0:
        raise EnvelopeError("encryption context declares 0 entries but is not empty")
    offset = _UINT16.size
    context: dict[str, str] = {}
    previous: bytes | None = None
    for _ in range(count):
        key_bytes, offset = _read_prefixed(view, offset, "encryption context key")
        value_bytes, offset = _read_prefixed(view, offset, "encryption context value")
        if previous is not None and key_bytes <= previous:
            raise EnvelopeError("encryption context keys are duplicated or not in canonical (sorted) order")
        previous = key_bytes
        try:
            context[key_bytes.decode("utf-8")] = value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("encryption context is not valid UTF-8") from None
    if offset != len(view):
        raise EnvelopeError("encryption context has trailing bytes after its last entry")
    return context


def _read_prefixed(view: memoryview, offset: int, what: str) -> tuple[bytes, int]:
    if offset + _UINT16.size > len(view):
        raise EnvelopeError(f"{what} length is truncated")
    (length,) = _UINT16.unpack_from(view, offset)
    start = offset + _UINT16.size
    if start + length > len(view):
        raise EnvelopeError(f"{what} runs past the end of the encryption context")
    return bytes(view[start : start + length]), start + length


def validate_context_for_write(context: Mapping[str, str]) -> dict[str, str]:
    """Copy a caller's context, refusing keys the SDK reserves (they would confuse official readers)."""
    copy = dict(context)
    for key in copy:
        if isinstance(key, str) and key.startswith(RESERVED_CONTEXT_PREFIX):
            raise EnvelopeError(f"encryption context key {key!r} uses the reserved prefix 'aws-crypto-'")
    serialize_context(copy)  # type and size checks
    return copy


def check_context(
    actual: Mapping[str, str], expected: Mapping[str, str] | None, *, allow_extra: bool = True
) -> None:
    """Compare a message's context with what the caller expects; a mismatch is an error.

    Every expected key must be present with the same value. Keys the caller did not mention are
    accepted when `allow_extra` (the default: writers may add fields, such as a purpose or a digest,
    that an older reader does not know) and refused otherwise. `expected=None` skips the check.
    """
    if expected is None:
        return
    wrong = sorted(k for k, v in expected.items() if k in actual and actual[k] != v)
    missing = sorted(k for k in expected if k not in actual)
    extra = [] if allow_extra else sorted(k for k in actual if k not in expected)
    problems = []
    if wrong:
        problems.append("different value for " + ", ".join(wrong))
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    if problems:
        raise EnvelopeError("encryption context does not match what was expected: " + "; ".join(problems))


# -- key derivation ---------------------------------------------------------------------------------
def derive_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """(AES key, commitment key) for this message: two HKDF-SHA512 expansions salted by the message id."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise EnvelopeError(f"data key is {len(data_key)} bytes; suite 0x0478 needs {DATA_KEY_LENGTH}")
    if len(message_id) != MESSAGE_ID_LENGTH:
        raise EnvelopeError(f"message id is {len(message_id)} bytes; format v2 needs {MESSAGE_ID_LENGTH}")
    info = _SUITE_ID.pack(SUITE) + _DERIVE_KEY_LABEL
    encryption_key = HKDF(algorithm=SHA512(), length=DATA_KEY_LENGTH, salt=message_id, info=info).derive(
        data_key
    )
    commitment_key = HKDF(
        algorithm=SHA512(), length=COMMITMENT_KEY_LENGTH, salt=message_id, info=_COMMIT_KEY_LABEL
    ).derive(data_key)
    return encryption_key, commitment_key


# -- header -----------------------------------------------------------------------------------------
def _serialize_header_body(
    message_id: bytes,
    context_bytes: bytes,
    encrypted_data_keys: Sequence[EncryptedDataKey],
    frame_length: int,
    commitment_key: bytes,
) -> bytes:
    if not encrypted_data_keys or len(encrypted_data_keys) > MAX_UINT16:
        raise EnvelopeError("a message needs between 1 and 65535 encrypted data keys")
    out = bytearray(_HEADER_START.pack(MESSAGE_FORMAT_VERSION, SUITE, message_id, len(context_bytes)))
    out += context_bytes
    out += _UINT16.pack(len(encrypted_data_keys))
    for edk in encrypted_data_keys:
        provider_id = edk.provider_id.encode("utf-8")
        for what, value in (("provider id", provider_id), ("provider info", edk.provider_info)):
            if len(value) > MAX_UINT16:
                raise EnvelopeError(f"encrypted data key {what} exceeds 65535 bytes")
        if not edk.ciphertext or len(edk.ciphertext) > MAX_UINT16:
            raise EnvelopeError("encrypted data key ciphertext must be 1..65535 bytes")
        out += _UINT16.pack(len(provider_id)) + provider_id  # Key Provider ID
        out += _UINT16.pack(len(edk.provider_info)) + edk.provider_info  # Key Provider Information
        out += _UINT16.pack(len(edk.ciphertext)) + edk.ciphertext  # Encrypted Data Key
    out += _HEADER_END.pack(ContentType.FRAMED, frame_length, commitment_key)
    return bytes(out)


def _check_frame_length(frame_length: int, limit: int = MAX_FRAME_LENGTH) -> None:
    if not isinstance(frame_length, int) or not 0 < frame_length <= min(limit, MAX_FRAME_LENGTH):
        raise EnvelopeError(f"frame length {frame_length} is outside 1..{min(limit, MAX_FRAME_LENGTH)}")


def build_header(
    *,
    data_key: bytes,
    context: Mapping[str, str],
    encrypted_data_keys: Sequence[EncryptedDataKey],
    frame_length: int = DEFAULT_FRAME_LENGTH,
    message_id: bytes | None = None,
) -> tuple[Header, FrameCipher]:
    """A new header (fresh random message id unless given) and the frame cipher for its body."""
    _check_frame_length(frame_length)
    message_id = os.urandom(MESSAGE_ID_LENGTH) if message_id is None else message_id
    context = validate_context_for_write(context)
    encryption_key, commitment_key = derive_keys(data_key, message_id)
    body = _serialize_header_body(
        message_id, serialize_context(context), encrypted_data_keys, frame_length, commitment_key
    )
    tag = AESGCM(encryption_key).encrypt(_HEADER_IV, b"", body)  # empty plaintext: the result is the tag
    header = Header(
        message_id=message_id,
        context=MappingProxyType(context),
        encrypted_data_keys=tuple(encrypted_data_keys),
        frame_length=frame_length,
        commitment_key=commitment_key,
        auth_tag=tag,
        body=body,
    )
    return header, FrameCipher(encryption_key, message_id)


def open_header(header: Header, data_key: bytes) -> FrameCipher:
    """Check key commitment, then the header tag; only then hand out a cipher for the frames."""
    encryption_key, commitment_key = derive_keys(data_key, header.message_id)
    if not hmac.compare_digest(commitment_key, header.commitment_key):
        raise EnvelopeError(
            "key commitment does not match: this data key is not the one the message was made with"
        )
    try:
        AESGCM(encryption_key).decrypt(_HEADER_IV, header.auth_tag, header.body)
    except InvalidTag:
        raise EnvelopeError("header authentication failed: the header was modified") from None
    return FrameCipher(encryption_key, header.message_id)


def replace_data_keys(
    header: Header, data_key: bytes, encrypted_data_keys: Sequence[EncryptedDataKey]
) -> Header:
    """The same message with a new set of wrapped data keys: same id, context, commitment, frames.

    Only the header bytes change (new EDK list, new header tag), so the body of the original message
    stays valid byte for byte -- that is what makes re-wrapping under a new KMS key cheap.
    """
    open_header(header, data_key)  # never re-authenticate a header we could not authenticate
    encryption_key, commitment_key = derive_keys(data_key, header.message_id)
    body = _serialize_header_body(
        header.message_id,
        serialize_context(header.context),
        encrypted_data_keys,
        header.frame_length,
        commitment_key,
    )
    tag = AESGCM(encryption_key).encrypt(_HEADER_IV, b"", body)
    return Header(
        message_id=header.message_id,
        context=header.context,
        encrypted_data_keys=tuple(encrypted_data_keys),
        frame_length=header.frame_length,
        commitment_key=commitment_key,
        auth_tag=tag,
        body=body,
    )


class _WireReader:
    """Exact reads from an untrusted stream; short reads become EnvelopeError, bytes read are recorded."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.consumed = bytearray()

    def read(self, n: int, what: str) -> bytes:
        data = read_exact(self._stream, n)
        if len(data) != n:
            raise EnvelopeError(f"message truncated inside the header ({what})")
        self.consumed += data
        return data

    def uint16(self, what: str) -> int:
        return int(_UINT16.unpack(self.read(_UINT16.size, what))[0])


def parse_header(stream: BinaryIO, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[Header, int]:
    """Read and structurally validate a header (not its tag: that needs the data key, see `open_header`).

    Returns the header and its length in bytes; the stream is left at the first frame.
    """
    wire = _WireReader(stream)
    version, suite_id, message_id, context_length = _HEADER_START.unpack(
        wire.read(_HEADER_START.size, "start")
    )
    if version != MESSAGE_FORMAT_VERSION:
        raise EnvelopeError(
            f"not an AWS Encryption SDK v2 message (version byte {version:#04x}); "
            "ModelShield reads only format v2 with suite 0x0478"
        )
    if suite_id != SUITE:
        raise EnvelopeError(
            f"unsupported algorithm suite {suite_id:#06x}; only 0x0478 (committing, unsigned)"
        )
    if context_length > limits.max_context_bytes:
        raise EnvelopeError(f"encryption context of {context_length} bytes exceeds the limit")
    context = parse_context(wire.read(context_length, "encryption context"))
    edk_count = wire.uint16("encrypted data key count")
    if edk_count == 0:
        raise EnvelopeError("message has no encrypted data keys")
    if edk_count > limits.max_encrypted_data_keys:
        raise EnvelopeError(
            f"message has {edk_count} encrypted data keys; the limit is {limits.max_encrypted_data_keys}"
        )
    edks = []
    for _ in range(edk_count):
        provider_id_bytes = wire.read(wire.uint16("key provider id length"), "key provider id")
        provider_info = wire.read(wire.uint16("key provider info length"), "key provider info")
        ciphertext = wire.read(wire.uint16("encrypted data key length"), "encrypted data key")
        try:
            provider_id = provider_id_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("encrypted data key provider id is not UTF-8") from None
        edks.append(EncryptedDataKey(provider_id, provider_info, ciphertext))
    content_type, frame_length, commitment_key = _HEADER_END.unpack(wire.read(_HEADER_END.size, "end"))
    if content_type != ContentType.FRAMED:
        raise EnvelopeError(
            f"content type {content_type:#04x} is not framed (0x02); non-framed is not accepted"
        )
    if frame_length == 0 or frame_length > min(limits.max_frame_length, MAX_FRAME_LENGTH):
        raise EnvelopeError(f"frame length {frame_length} is outside 1..{limits.max_frame_length}")
    body = bytes(wire.consumed)
    tag = wire.read(TAG_LENGTH, "header authentication tag")
    header = Header(
        message_id=message_id,
        context=MappingProxyType(context),
        encrypted_data_keys=tuple(edks),
        frame_length=frame_length,
        commitment_key=commitment_key,
        auth_tag=tag,
        body=body,
    )
    return header, header.length


# -- frames -----------------------------------------------------------------------------------------
def frame_iv(sequence_number: int) -> bytes:
    """Deterministic IV: 8 zero bytes then the uint32 sequence number (unique per message key)."""
    return bytes(IV_LENGTH - 4) + _UINT32.pack(sequence_number)


def sealed_frame_size(plaintext_length: int, final: bool) -> int:
    """Wire size of one frame holding `plaintext_length` bytes."""
    if final:
        return _FINAL_FRAME_START.size + plaintext_length + TAG_LENGTH
    return _FRAME_START.size + plaintext_length + TAG_LENGTH


class FrameCipher:
    """Seals and opens body frames under one message's derived key."""

    def __init__(self, encryption_key: bytes, message_id: bytes) -> None:
        self._aead = AESGCM(encryption_key)
        self._message_id = message_id

    def _aad(self, sequence_number: int, final: bool, length: int) -> bytes:
        label = _FINAL_FRAME_AAD_LABEL if final else _FRAME_AAD_LABEL
        return self._message_id + label + _BODY_AAD_TAIL.pack(sequence_number, length)

    def seal_into(self, sequence_number: int, final: bool, plaintext: memoryview, out: memoryview) -> int:
        """Write one serialized frame into `out`; return its size. No intermediate copies."""
        # 0xFFFFFFFF doubles as the final-frame marker, so only the final frame may carry that number.
        if not 1 <= sequence_number <= MAX_FRAME_COUNT or (sequence_number == MAX_FRAME_COUNT and not final):
            raise EnvelopeError(
                "message would exceed the format's 2^32 - 1 frames; use a larger frame length"
            )
        n = len(plaintext)
        iv = frame_iv(sequence_number)
        if final:
            _FINAL_FRAME_START.pack_into(out, 0, FINAL_FRAME_MARKER, sequence_number, iv, n)
            start = _FINAL_FRAME_START.size
        else:
            _FRAME_START.pack_into(out, 0, sequence_number, iv)
            start = _FRAME_START.size
        end = start + n + TAG_LENGTH
        self._aead.encrypt_into(iv, plaintext, self._aad(sequence_number, final, n), out[start:end])
        return end

    def open_into(self, sequence_number: int, final: bool, sealed: memoryview, out: memoryview) -> int:
        """Decrypt ciphertext||tag of one frame into `out`; return the plaintext length."""
        n = len(sealed) - TAG_LENGTH
        try:
            self._aead.decrypt_into(
                frame_iv(sequence_number), sealed, self._aad(sequence_number, final, n), out[:n]
            )
        except InvalidTag:
            raise EnvelopeError(
                f"frame {sequence_number} failed authentication: the ciphertext or its tag was modified"
            ) from None
        return n


class FrameReader:
    """Reads frames of one message in order, enforcing sequence, IV, length and count rules."""

    def __init__(
        self, stream: BinaryIO, header: Header, cipher: FrameCipher, limits: ReadLimits = DEFAULT_LIMITS
    ):
        self._stream = stream
        self._cipher = cipher
        self._frame_length = header.frame_length
        self._limits = limits
        self._sealed = bytearray(header.frame_length + TAG_LENGTH)
        self.next_sequence = 1
        self.plaintext_bytes = 0
        self.finished = False

    def read_into(self, out: memoryview) -> tuple[int, bool]:
        """Decrypt the next frame into `out` (at least frame-length bytes); return (length, is_final)."""
        if self.finished:
            raise EnvelopeError("read past the final frame")
        expected = self.next_sequence
        if expected > self._limits.max_frames:
            raise EnvelopeError(f"message has more than {self._limits.max_frames} frames")
        first = read_exact(self._stream, _UINT32.size)
        if not first:
            raise EnvelopeError(
                f"message truncated: it ends after frame {expected - 1} without a final frame"
            )
        if len(first) < _UINT32.size:
            raise EnvelopeError(f"message truncated inside frame {expected}")
        (marker,) = _UINT32.unpack(first)
        final = marker == FINAL_FRAME_MARKER
        if final:
            rest = self._read(_FINAL_FRAME_START.size - _UINT32.size, expected)
            _, sequence_number, iv, length = _FINAL_FRAME_START.unpack(first + rest)
            if length > self._frame_length:
                raise EnvelopeError(
                    f"final frame claims {length} bytes, more than the frame length {self._frame_length}"
                )
        else:
            sequence_number = marker
            iv = self._read(IV_LENGTH, expected)
            length = self._frame_length
        if sequence_number != expected:
            raise EnvelopeError(
                f"frames out of order: expected frame {expected}, found {sequence_number} "
                "(frames were reordered, dropped or duplicated)"
            )
        if iv != frame_iv(sequence_number):
            raise EnvelopeError(f"frame {sequence_number} has a non-canonical IV: the frame was modified")
        if self._limits.max_plaintext_bytes is not None and (
            self.plaintext_bytes + length > self._limits.max_plaintext_bytes
        ):
            raise EnvelopeError(
                f"message exceeds the plaintext limit of {self._limits.max_plaintext_bytes} bytes"
            )
        sealed = memoryview(self._sealed)[: length + TAG_LENGTH]
        if read_exact_into(self._stream, sealed) != len(sealed):
            raise EnvelopeError(f"message truncated inside frame {sequence_number}")
        n = self._cipher.open_into(sequence_number, final, sealed, out)
        self.next_sequence += 1
        self.plaintext_bytes += n
        if final:
            self.finished = True
            if read_exact(self._stream, 1):
                raise EnvelopeError("unexpected bytes after the final frame (this suite has no footer)")
        return n, final

    def _read(self, n: int, sequence_number: int) -> bytes:
        data = read_exact(self._stream, n)
        if len(data) != n:
            raise EnvelopeError(f"message truncated inside frame {sequence_number}")
        return data


# -- stream helpers ---------------------------------------------------------------------------------
def read_exact(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes, looping over short reads; fewer only at end of stream."""
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_exact_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill `view` from the stream, looping over short reads; return bytes read (< len only at EOF)."""
    filled = 0
    readinto = getattr(stream, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            chunk = stream.read(len(view) - filled)
            n = len(chunk)
            view[filled : filled + n] = chunk
        if not n:
            break
        filled += n
    return filled
