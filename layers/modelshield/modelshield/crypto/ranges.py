"""Range-parallel encryption: one AWS Encryption SDK message built from independently encrypted byte ranges.

Why this works (and stays one valid message): in format v2 a frame's IV is its sequence number and its
AAD is (message id, "Frame"/"Final Frame", sequence number, length) -- nothing depends on the frames
before it or on the header's encryption context. So if every range is a whole number of frames, the
frames of plaintext range `i` are fully determined by the message key, the message id and the range's
position: `first_sequence = start / frame_length + 1`. Workers seal their ranges independently (threads
here; separate functions with the same derived key in a fan-out), and the concatenation of the sealed
ranges, in order, is byte-for-byte the body the sequential encryptor would have written. The official
`aws-encryption-sdk` decrypts it (the tests prove it).

What the coordinator alone does: it picks the data key and message id, hashes the plaintext in order
(SHA-256 is sequential; it is cheap next to reading and sealing, and the bounded window of ranges in
flight keeps memory flat), and once the digest is known writes the header (context with the digest, data
key wrapped by KMS) -- the header goes in front of range 0 in part 1 of the multipart upload.

Security: the same derived key and deterministic IVs as the sequential path, so nothing new is exposed;
a range sealed twice yields identical bytes (same key, IV, AAD, plaintext), so a retried worker is
harmless. Reordering, dropping or duplicating ranges is caught on read by the frame sequence check, a
range cut short by the length and final-frame checks -- `open_range` applies the same rules per range so a
stored message can be verified in parallel before it is released.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from modelshield.crypto.envelope import (
    DATA_KEY_LENGTH,
    DEFAULT_FRAME_LENGTH,
    DEFAULT_LIMITS,
    MAX_FRAME_COUNT,
    MESSAGE_ID_LENGTH,
    FrameCipher,
    FrameReader,
    Header,
    derive_keys,
    sealed_frame_size,
)
from modelshield.crypto.streams import BodyResult, PendingHeader, _check_write_frame_length
from modelshield.errors import EnvelopeError, UsageError

DEFAULT_RANGE_SIZE: Final = 64 * 1024 * 1024  # plaintext per range (16 frames of 4 MiB): one S3 part
MIN_RANGE_SIZE: Final = 5 * 1024 * 1024  # S3's minimum part size (every part but the last)


@dataclass(frozen=True)
class Range:
    """One plaintext byte range [start, end) and where its frames sit in the message body."""

    index: int
    start: int
    end: int
    first_sequence: int
    final: bool  # this range ends with the message's final frame
    body_offset: int  # offset of its first frame, counted from the end of the header
    sealed_size: int

    @property
    def size(self) -> int:
        return self.end - self.start


def plan_ranges(
    plaintext_size: int, *, frame_length: int = DEFAULT_FRAME_LENGTH, range_size: int = DEFAULT_RANGE_SIZE
) -> list[Range]:
    """Split a plaintext into whole-frame ranges; the last one carries the final frame.

    The final frame holds the remainder after the last whole frame -- empty when the plaintext is an
    exact multiple of the frame length, as the reference library writes it.
    """
    _check_write_frame_length(frame_length)
    if plaintext_size < 0:
        raise UsageError(f"plaintext size must not be negative, not {plaintext_size}")
    if range_size < frame_length or range_size % frame_length:
        raise UsageError(
            f"range size must be a positive multiple of the frame length {frame_length}, not {range_size}"
        )
    if plaintext_size // frame_length + 1 > MAX_FRAME_COUNT:
        raise EnvelopeError("message would exceed the format's 2^32 - 1 frames; use a larger frame length")
    count = max(1, -(-plaintext_size // range_size))
    ranges: list[Range] = []
    offset = 0
    for index in range(count):
        start = index * range_size
        end = min(start + range_size, plaintext_size)
        final = index == count - 1
        frames = (end - start) // frame_length
        sealed = frames * sealed_frame_size(frame_length, False)
        if final:
            # A last range that is all whole frames is followed by an empty final frame.
            sealed += sealed_frame_size((end - start) - frames * frame_length, True)
        ranges.append(Range(index, start, end, start // frame_length + 1, final, offset, sealed))
        offset += sealed
    return ranges


def seal_range(
    cipher: FrameCipher, rng: Range, plaintext: bytes | memoryview, frame_length: int
) -> bytearray:
    """The sealed frames of one range (exactly `rng.sealed_size` bytes)."""
    view = memoryview(plaintext)
    if len(view) != rng.size:
        raise UsageError(f"range {rng.index} needs {rng.size} plaintext bytes, got {len(view)}")
    out = bytearray(rng.sealed_size)
    target = memoryview(out)
    used = offset = 0
    sequence = rng.first_sequence
    for _ in range(rng.size // frame_length):
        used += cipher.seal_into(sequence, False, view[offset : offset + frame_length], target[used:])
        offset += frame_length
        sequence += 1
    if rng.final:
        used += cipher.seal_into(sequence, True, view[offset:], target[used:])
    if used != rng.sealed_size:  # pragma: no cover - plan and sealer disagree: a bug, never ship it
        raise EnvelopeError(f"range {rng.index} sealed to {used} bytes, planned {rng.sealed_size}")
    return out


def open_range(header: Header, cipher: FrameCipher, rng: Range, sealed: bytes | memoryview) -> bytearray:
    """Authenticate and decrypt one range of a stored message, with the sequential reader's rules.

    The frames must carry exactly the sequence numbers the range's position implies, canonical IVs, and
    (for the last range) a final frame followed by nothing: a range moved, dropped, duplicated or cut
    fails here just as it would in a sequential decryption.
    """
    if len(sealed) != rng.sealed_size:
        raise EnvelopeError(
            f"range {rng.index} is {len(sealed)} bytes, expected {rng.sealed_size}: the message was "
            "truncated, extended or its parts rearranged"
        )
    reader = FrameReader(io.BytesIO(sealed), header, cipher, DEFAULT_LIMITS)
    reader.next_sequence = rng.first_sequence
    out = bytearray(rng.size + header.frame_length)
    view = memoryview(out)
    used = 0
    for _ in range(rng.size // header.frame_length):
        n, final = reader.read_into(view[used:])
        if final:
            raise EnvelopeError(f"range {rng.index}: a final frame before the range's end")
        used += n
    if rng.final:
        n, final = reader.read_into(view[used:])
        if not final:
            raise EnvelopeError(f"range {rng.index}: the message's final frame is missing")
        used += n
    if used != rng.size:
        raise EnvelopeError(f"range {rng.index} decrypted to {used} bytes, expected {rng.size}")
    del view
    del out[used:]
    return out


class RangeEncryptor:
    """Coordinator of one range-parallel message: key material, the plan, in-order hashing, the header."""

    def __init__(
        self,
        plaintext_size: int,
        *,
        frame_length: int = DEFAULT_FRAME_LENGTH,
        range_size: int = DEFAULT_RANGE_SIZE,
        data_key: bytes | None = None,
    ) -> None:
        """`data_key`: one KMS generated already (header first); by default a local one (header last)."""
        self.frame_length = frame_length
        self.ranges = plan_ranges(plaintext_size, frame_length=frame_length, range_size=range_size)
        self.plaintext_size = plaintext_size
        self._data_key = data_key if data_key is not None else os.urandom(DATA_KEY_LENGTH)
        self.message_id = os.urandom(MESSAGE_ID_LENGTH)
        encryption_key, _ = derive_keys(self._data_key, self.message_id)
        self.cipher = FrameCipher(encryption_key, self.message_id)

    @property
    def body_size(self) -> int:
        last = self.ranges[-1]
        return last.body_offset + last.sealed_size

    def seal(self, rng: Range, plaintext: bytes | memoryview) -> bytearray:
        return seal_range(self.cipher, rng, plaintext, self.frame_length)

    def run(
        self,
        read: Callable[[Range], bytes | memoryview],
        emit: Callable[[Range, bytearray], None],
        *,
        workers: int = 4,
        progress: Callable[[int], None] | None = None,
    ) -> PendingHeader:
        """Read, seal and emit every range on `workers` threads; hash the plaintext in order.

        At most `workers + 1` ranges are in flight, so memory is about 2 x range size x (workers + 1)
        whatever the object's size. `emit` receives each range's sealed frames (possibly concurrently,
        in any order); the header comes from the returned `PendingHeader.finish` once the digest is in.
        """
        if workers < 1:
            raise UsageError(f"workers must be at least 1, not {workers}")
        digest = hashlib.sha256()

        def work(rng: Range) -> bytes | memoryview:
            plaintext = read(rng)
            if len(plaintext) != rng.size:
                raise EnvelopeError(
                    f"range {rng.index} read {len(plaintext)} bytes, expected {rng.size}: the object "
                    "changed while it was being encrypted"
                )
            emit(rng, self.seal(rng, plaintext))
            return plaintext

        with ThreadPoolExecutor(workers, thread_name_prefix="modelshield-range") as pool:
            queued: deque[Future[bytes | memoryview]] = deque()
            pending: Iterator[Range] = iter(self.ranges)
            try:
                for rng in pending:
                    queued.append(pool.submit(work, rng))
                    if len(queued) > workers:
                        self._hash_next(queued, digest, progress)
                while queued:
                    self._hash_next(queued, digest, progress)
            except BaseException:
                for future in queued:
                    future.cancel()
                raise
        body = BodyResult(
            plaintext_sha256=digest.hexdigest(),
            plaintext_size=self.plaintext_size,
            ciphertext_size=self.body_size,
            frame_count=self.ranges[-1].first_sequence + self.ranges[-1].size // self.frame_length,
        )
        return PendingHeader(self._data_key, self.message_id, self.frame_length, body)

    @staticmethod
    def _hash_next(
        queued: deque[Future[bytes | memoryview]],
        digest: hashlib._Hash,
        progress: Callable[[int], None] | None,
    ) -> None:
        plaintext = queued.popleft().result()
        digest.update(plaintext)
        if progress is not None:
            progress(len(plaintext))
