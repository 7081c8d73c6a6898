"""Encrypt and decrypt streams of any size with flat memory, hashing the plaintext on the way.

Memory: a handful of chunk buffers (3 in, 2 out; a chunk is a whole number of frames, about 4 MiB),
whatever the input size. Speed: reading, SHA-256, AES-GCM and writing each release the GIL on large
buffers, so they run as a pipeline on separate threads -- reader, hasher and writer are single-thread
executors (which keeps each stage in order) and the calling thread encrypts. The hash therefore costs
almost nothing on top of encryption on a machine with two or more cores.

Two ways to get the plaintext SHA-256 into the encryption context (which lives in the header):
* the pipeline already knows it (it hashed while downloading): pass the context with it, and
  `plaintext_sha256=` so the bytes actually encrypted are checked against it;
* header after body (`encrypt_body_first` / `encrypt_file(context_digest_key=...)`): frames do not
  depend on the context (their AAD is message id, sequence number and length), so the body is encrypted
  first under a locally generated data key, and the header -- context with digest, data key wrapped by
  KMS Encrypt -- is made afterwards and placed in front (a staged file here; part 1 of a multipart
  upload in `s3.encrypt_to_s3`). The cost: KMS sees Encrypt rather than GenerateDataKey, so the role
  needs kms:Encrypt.

Decryption never publishes unverified plaintext: `decrypt_to` writes into a temporary file next to the
destination and renames it into place only after the final frame has authenticated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelshield.crypto.envelope import (
    DATA_KEY_LENGTH,
    DEFAULT_FRAME_LENGTH,
    DEFAULT_LIMITS,
    MESSAGE_ID_LENGTH,
    FrameCipher,
    FrameReader,
    Header,
    ReadLimits,
    build_header,
    check_context,
    derive_keys,
    open_header,
    parse_header,
    read_exact_into,
    sealed_frame_size,
)
from modelshield.crypto.keyring import DataKey, Keyring
from modelshield.errors import ArtifactNotFound, IntegrityError, UsageError

CHUNK_BYTES = 4 * 1024 * 1024  # plaintext per pipeline step: amortises hand-offs, stays cache-friendly
MAX_WRITE_FRAME_LENGTH = 256 * 1024 * 1024  # a writer's frame buffer is allocated at this size (x5)
FRAME_LENGTH_MULTIPLE = 128  # aws-encryption-sdk refuses to encrypt with other frame lengths


@dataclass(frozen=True)
class BodyResult:
    """What encrypting or decrypting the frames produced."""

    plaintext_sha256: str | None
    plaintext_size: int
    ciphertext_size: int
    frame_count: int


@dataclass(frozen=True)
class EncryptResult:
    """One encrypted message: identity, sizes and the plaintext digest seen while encrypting."""

    message_id: str
    plaintext_sha256: str | None
    plaintext_size: int
    ciphertext_size: int
    header_length: int
    frame_length: int
    frame_count: int
    key_arn: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DecryptResult:
    """One verified decryption. `path` is set when the plaintext was published to a file."""

    message_id: str
    plaintext_sha256: str | None
    plaintext_size: int
    frame_count: int
    key_arn: str
    context: Mapping[str, str]
    path: Path | None = None


# -- stream plumbing --------------------------------------------------------------------------------
class _ReadAdapter(io.RawIOBase):
    """Gives a read()-only stream (e.g. an S3 StreamingBody) a readinto, so it can be buffered."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n


def as_reader(stream: Any, buffer_size: int = 1024 * 1024) -> BinaryIO:
    """A stream with efficient small reads and zero-copy large reads, whatever `stream` is."""
    if isinstance(stream, io.BufferedIOBase | io.RawIOBase):
        return stream  # type: ignore[return-value]
    return io.BufferedReader(_ReadAdapter(stream), buffer_size)


def _write_all(dst: Any, data: memoryview) -> None:
    while len(data):
        n = dst.write(data)
        if n is None or n >= len(data):
            return
        data = data[n:]


def _wait(future: Future[Any] | None) -> None:
    if future is not None:
        future.result()


class _Buffers:
    """`count` reusable buffers of `size` bytes, each allocated on first use (small messages need one)."""

    def __init__(self, count: int, size: int) -> None:
        self._size = size
        self._views: list[memoryview | None] = [None] * count

    def __getitem__(self, index: int) -> memoryview:
        view = self._views[index]
        if view is None:
            view = self._views[index] = memoryview(bytearray(self._size))
        return view


class _Inline:
    """Executor stand-in that runs a task at once: a message of one chunk is not worth any threads."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future


_INLINE: Any = _Inline()


@contextlib.contextmanager
def _stages(*names: str) -> Iterator[list[ThreadPoolExecutor]]:
    """One single-thread executor per pipeline stage, so each stage processes chunks in order."""
    executors = [ThreadPoolExecutor(1, thread_name_prefix=f"modelshield-{n}") for n in names]
    try:
        yield executors
    finally:
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)


def _check_write_frame_length(frame_length: int) -> None:
    """Frames we write are ones the reference library would write too: multiples of 128 bytes."""
    if (
        not isinstance(frame_length, int)
        or not 0 < frame_length <= MAX_WRITE_FRAME_LENGTH
        or frame_length % FRAME_LENGTH_MULTIPLE
    ):
        raise UsageError(
            f"frame length must be a multiple of {FRAME_LENGTH_MULTIPLE} bytes between "
            f"{FRAME_LENGTH_MULTIPLE} and {MAX_WRITE_FRAME_LENGTH}, not {frame_length}"
        )


# -- encryption -------------------------------------------------------------------------------------
def encrypt_frames(
    src: BinaryIO,
    dst: Any,
    *,
    cipher: FrameCipher,
    frame_length: int,
    frames_per_write: int | None = None,
    hash_plaintext: bool = True,
) -> BodyResult:
    """Encrypt `src` into frames written to `dst`; every `dst.write` call carries whole frames only.

    A full chunk becomes regular frames; the final frame holds the remainder (empty when the plaintext
    is an exact multiple of the frame length, as the reference library does).
    """
    _check_write_frame_length(frame_length)
    frames = frames_per_write or max(1, CHUNK_BYTES // frame_length)
    chunk = frames * frame_length
    out_size = frames * sealed_frame_size(frame_length, False) + sealed_frame_size(0, True)
    inputs = _Buffers(3, chunk)
    outputs = _Buffers(2, out_size)
    hashed: list[Future[Any] | None] = [None] * 3
    written: list[Future[Any] | None] = [None] * 2
    digest = hashlib.sha256() if hash_plaintext else None
    sequence = 1
    total_in = total_out = 0
    with contextlib.ExitStack() as stack:
        reader = hasher = writer = _INLINE
        pending = reader.submit(read_exact_into, src, inputs[0])
        step = 0
        while True:
            n = pending.result()
            if step == 0 and n == chunk:  # more than one chunk: from here on, stages run on threads
                reader, hasher, writer = stack.enter_context(_stages("read", "hash", "write"))
            view = inputs[step % 3][:n]
            last = n < chunk
            if not last:  # prefetch the next chunk into the buffer whose hash is done
                following = (step + 1) % 3
                _wait(hashed[following])
                pending = reader.submit(read_exact_into, src, inputs[following])
            if digest is not None and n:
                hashed[step % 3] = hasher.submit(digest.update, view)
            slot = step % 2
            _wait(written[slot])
            out = outputs[slot]
            used = offset = 0
            for _ in range(n // frame_length):
                used += cipher.seal_into(sequence, False, view[offset : offset + frame_length], out[used:])
                offset += frame_length
                sequence += 1
            if last:
                used += cipher.seal_into(sequence, True, view[offset:n], out[used:])
            written[slot] = writer.submit(_write_all, dst, out[:used])
            total_in += n
            total_out += used
            step += 1
            if last:
                break
        for future in (*written, *hashed):
            _wait(future)
    return BodyResult(
        plaintext_sha256=digest.hexdigest() if digest is not None else None,
        plaintext_size=total_in,
        ciphertext_size=total_out,
        frame_count=sequence,
    )


def verify_digest(expected: str | None, actual: str | None) -> None:
    """IntegrityError unless `actual` equals `expected` (when one is expected)."""
    if expected is not None and (actual is None or not hmac.compare_digest(expected.lower(), actual)):
        raise IntegrityError(
            f"plaintext sha256 is {actual}, not the expected {expected}: the input changed since hashing"
        )


def encrypt_stream(
    src: BinaryIO,
    dst: Any,
    *,
    data_key: DataKey,
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
    plaintext_sha256: str | None = None,
    hash_plaintext: bool = True,
    frames_per_write: int | None = None,
) -> EncryptResult:
    """Write one message (header, then frames) for `src` to `dst` under an already generated data key.

    `plaintext_sha256`, when given, must match the bytes read (IntegrityError otherwise, after which
    `dst` holds a message the caller must discard). `hash_plaintext=False` skips hashing entirely.
    """
    _check_write_frame_length(frame_length)
    header, cipher = build_header(
        data_key=data_key.plaintext,
        context=context,
        encrypted_data_keys=(data_key.encrypted_data_key,),
        frame_length=frame_length,
    )
    header_bytes = header.to_bytes()
    _write_all(dst, memoryview(header_bytes))
    body = encrypt_frames(
        as_reader(src),
        dst,
        cipher=cipher,
        frame_length=frame_length,
        frames_per_write=frames_per_write,
        hash_plaintext=hash_plaintext or plaintext_sha256 is not None,
    )
    verify_digest(plaintext_sha256, body.plaintext_sha256)
    return _result(header, body, data_key.key_arn)


def _result(header: Header, body: BodyResult, key_arn: str) -> EncryptResult:
    return EncryptResult(
        message_id=header.message_id.hex(),
        plaintext_sha256=body.plaintext_sha256,
        plaintext_size=body.plaintext_size,
        ciphertext_size=header.length + body.ciphertext_size,
        header_length=header.length,
        frame_length=header.frame_length,
        frame_count=body.frame_count,
        key_arn=key_arn,
        context=dict(header.context),
    )


class PendingHeader:
    """A body encrypted under a local data key; `finish` makes the header once the context is known."""

    def __init__(self, data_key: bytes, message_id: bytes, frame_length: int, body: BodyResult) -> None:
        self._data_key = data_key
        self.message_id = message_id
        self.frame_length = frame_length
        self.body = body

    def finish(
        self,
        *,
        keyring: Keyring,
        key_id: str,
        context: Mapping[str, str],
        digest_key: str | None = None,
    ) -> tuple[bytes, EncryptResult]:
        """Wrap the data key under `key_id` with the final context (plus the digest under `digest_key`)."""
        full = dict(context)
        if digest_key is not None:
            if digest_key in full:
                raise UsageError(f"context already has {digest_key!r}; it is filled in from the plaintext")
            full[digest_key] = str(self.body.plaintext_sha256)
        data_key = keyring.wrap(self._data_key, key_id, full)
        header, _ = build_header(
            data_key=self._data_key,
            context=full,
            encrypted_data_keys=(data_key.encrypted_data_key,),
            frame_length=self.frame_length,
            message_id=self.message_id,
        )
        return header.to_bytes(), _result(header, self.body, data_key.key_arn)

    def finish_with(self, data_key: DataKey, context: Mapping[str, str]) -> tuple[bytes, EncryptResult]:
        """The header for a body sealed under a data key KMS generated up front for `context`."""
        if not hmac.compare_digest(data_key.plaintext, self._data_key):
            raise UsageError("the body was sealed under a different data key")
        header, _ = build_header(
            data_key=self._data_key,
            context=dict(context),
            encrypted_data_keys=(data_key.encrypted_data_key,),
            frame_length=self.frame_length,
            message_id=self.message_id,
        )
        return header.to_bytes(), _result(header, self.body, data_key.key_arn)


def encrypt_body_first(
    src: BinaryIO,
    dst: Any,
    *,
    frame_length: int = DEFAULT_FRAME_LENGTH,
    frames_per_write: int | None = None,
) -> PendingHeader:
    """Encrypt the frames of a message whose header will be written later (header after body)."""
    data_key = os.urandom(DATA_KEY_LENGTH)
    message_id = os.urandom(MESSAGE_ID_LENGTH)
    encryption_key, _ = derive_keys(data_key, message_id)
    body = encrypt_frames(
        as_reader(src),
        dst,
        cipher=FrameCipher(encryption_key, message_id),
        frame_length=frame_length,
        frames_per_write=frames_per_write,
    )
    return PendingHeader(data_key, message_id, frame_length, body)


@contextlib.contextmanager
def staged_output(dest: Path) -> Iterator[BinaryIO]:
    """A temporary file beside `dest`, renamed onto it only if the block completes; removed otherwise."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        raise ArtifactNotFound(f"output directory {dest.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_input(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")  # closed by the caller's with-block
    except FileNotFoundError:
        raise ArtifactNotFound(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"input {path} is a directory, not a file") from None


def encrypt_file(
    src: Path | BinaryIO,
    dest: Path,
    *,
    keyring: Keyring,
    key_id: str,
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
    plaintext_sha256: str | None = None,
    context_digest_key: str | None = None,
) -> EncryptResult:
    """Encrypt a local file or a stream to the file `dest`, published atomically when complete.

    With `context_digest_key` the header comes after the body (see the module doc): the body is staged
    in an unnamed temporary file beside `dest`, then copied behind the header.
    """
    _check_write_frame_length(frame_length)
    if not Path(dest).parent.is_dir():
        raise ArtifactNotFound(f"output directory {Path(dest).parent} does not exist")
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open_input(Path(src))) if isinstance(src, str | Path) else src
        if context_digest_key is None:
            data_key = keyring.generate(key_id, context)
            with staged_output(dest) as out:
                return encrypt_stream(
                    source,
                    out,
                    data_key=data_key,
                    context=context,
                    frame_length=frame_length,
                    plaintext_sha256=plaintext_sha256,
                )
        body_file = stack.enter_context(tempfile.TemporaryFile(dir=Path(dest).parent))
        pending = encrypt_body_first(source, body_file, frame_length=frame_length)
        verify_digest(plaintext_sha256, pending.body.plaintext_sha256)
        header, result = pending.finish(
            keyring=keyring, key_id=key_id, context=context, digest_key=context_digest_key
        )
        with staged_output(dest) as out:
            out.write(header)
            body_file.seek(0)
            shutil.copyfileobj(body_file, out, 8 * 1024 * 1024)
        return result


# -- decryption -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expectation:
    """What a message must satisfy to be decrypted: whose keys may unwrap it, the encryption context it
    must carry (None: any; extra pairs allowed unless `allow_extra_context` is False) and the parser's
    limits. Every decrypt function takes one, so the checks cannot drift apart between them."""

    keyring: Keyring
    context: Mapping[str, str] | None
    allow_extra_context: bool = True
    limits: ReadLimits = DEFAULT_LIMITS


def open_message(src: BinaryIO, *, expect: Expectation) -> tuple[Header, FrameReader, DataKey]:
    """Parse and authenticate the header; return a reader positioned at the first frame.

    The context is compared before KMS is asked for anything, so a wrong message costs no KMS call.
    """
    header, _ = parse_header(src, expect.limits)
    check_context(header.context, expect.context, allow_extra=expect.allow_extra_context)
    data_key = expect.keyring.unwrap(header.encrypted_data_keys, header.context)
    cipher = open_header(header, data_key.plaintext)
    return header, FrameReader(src, header, cipher, expect.limits), data_key


def decrypt_stream(src: Any, dst: Any, *, expect: Expectation, hash_plaintext: bool = True) -> DecryptResult:
    """Decrypt a whole message into `dst`.

    Each frame is authenticated before it is written, but truncation after a frame boundary is only
    detectable at the end: `dst` must be staged and discarded on error. Use `decrypt_to` for files.
    """
    header, reader, data_key = open_message(as_reader(src), expect=expect)
    frame_length = header.frame_length
    batch = max(1, CHUNK_BYTES // frame_length)
    outputs = _Buffers(2, batch * frame_length)
    pending: list[tuple[Future[Any] | None, Future[Any] | None]] = [(None, None), (None, None)]
    digest = hashlib.sha256() if hash_plaintext else None
    step = 0
    with contextlib.ExitStack() as stack:
        hasher = writer = _INLINE
        while not reader.finished:
            slot = step % 2
            for future in pending[slot]:
                _wait(future)
            out = outputs[slot]
            used = 0
            for _ in range(batch):
                n, final = reader.read_into(out[used:])
                used += n
                if final:
                    break
            view = out[:used]
            if step == 0 and not reader.finished:  # more than one batch: hash and write on threads
                hasher, writer = stack.enter_context(_stages("hash", "write"))
            hash_future = hasher.submit(digest.update, view) if digest is not None else None
            pending[slot] = (hash_future, writer.submit(_write_all, dst, view))
            step += 1
        for pair in pending:
            for future in pair:
                _wait(future)
    return DecryptResult(
        message_id=header.message_id.hex(),
        plaintext_sha256=digest.hexdigest() if digest is not None else None,
        plaintext_size=reader.plaintext_bytes,
        frame_count=reader.next_sequence - 1,
        key_arn=data_key.key_arn,
        context=dict(header.context),
    )


def decrypt_to(
    src: Any, dest: Path, *, expect: Expectation, expected_sha256: str | None = None
) -> DecryptResult:
    """Decrypt `src` (a binary stream) to the file `dest`, published only after the final frame verifies.

    The plaintext goes to a private (0600) temporary file in `dest`'s directory and is renamed onto
    `dest` at the end; on any failure the temporary file is removed and `dest` is left untouched.
    `expected_sha256` additionally pins the plaintext digest (e.g. the one recorded at scan time).
    """
    dest = Path(dest)
    with staged_output(dest) as out:
        result = decrypt_stream(src, out, expect=expect)
        verify_digest(expected_sha256, result.plaintext_sha256)
    return dataclasses.replace(result, path=dest)


def decrypt_file(src: Path, dest: Path, *, expect: Expectation) -> DecryptResult:
    """`decrypt_to` for a local ciphertext file."""
    with _open_input(Path(src)) as source:
        return decrypt_to(source, dest, expect=expect)
