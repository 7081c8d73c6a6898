"""Streaming: flat memory, hashing on the way, staged publication, header-after-body, odd streams."""

from __future__ import annotations

import hashlib
import io
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from modelshield.crypto.envelope import parse_header, sealed_frame_size
from modelshield.crypto.keyring import StaticKeyring
from modelshield.crypto.streams import (
    Expectation,
    decrypt_file,
    decrypt_stream,
    decrypt_to,
    encrypt_file,
    encrypt_stream,
)
from modelshield.errors import ArtifactNotFound, IntegrityError, UsageError

from tests.unit.crypto.envelope_helpers import CONTEXT, KEY_NAME, encrypt_bytes


class ZeroStream:
    """`size` zero bytes through read() only, without ever holding them all (no readinto on purpose)."""

    def __init__(self, size: int, max_read: int | None = None) -> None:
        self.remaining = size
        self.max_read = max_read

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        if self.max_read:
            n = min(n, self.max_read)
        self.remaining -= n
        return bytes(n)


class CountingSink:
    """Discards what it is given, remembering the size of every write."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    def write(self, data: Any) -> int:
        self.writes.append(len(data))
        return len(data)


def test_decrypt_to_publishes_a_private_file_with_the_plaintext_and_its_digest(
    keyring: StaticKeyring, tmp_path: Path
) -> None:
    # Given a message for 10 KB of plaintext
    data = bytes(range(256)) * 40
    message = encrypt_bytes(data, keyring)
    dest = tmp_path / "model.bin"
    # When it is decrypted to a file
    result = decrypt_to(io.BytesIO(message), dest, expect=Expectation(keyring, CONTEXT))
    # Then the file holds the plaintext, is readable by its owner only, and the result describes it
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert result.path == dest
    assert result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert result.plaintext_size == len(data)
    assert result.frame_count == 11  # ten full 1 KiB frames and a final one
    assert result.key_arn == KEY_NAME
    assert result.context == CONTEXT
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_encrypt_file_writes_a_message_the_reference_library_reads(
    keyring: StaticKeyring, sdk: Any, sdk_raw_provider: Any, tmp_path: Path
) -> None:
    src, dest = tmp_path / "model.pt", tmp_path / "model.pt.enc"
    src.write_bytes(b"weights" * 5000)
    result = encrypt_file(src, dest, keyring=keyring, key_id=KEY_NAME, context=CONTEXT, frame_length=4096)
    plaintext, header = sdk.decrypt(source=dest.read_bytes(), key_provider=sdk_raw_provider)
    assert plaintext == src.read_bytes()
    assert header.encryption_context == CONTEXT
    assert result.ciphertext_size == dest.stat().st_size
    assert result.plaintext_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.enc"]


def test_header_after_body_puts_the_computed_digest_into_the_context(
    keyring: StaticKeyring, sdk: Any, sdk_raw_provider: Any, tmp_path: Path
) -> None:
    # Given a plaintext whose digest is not known in advance
    src, dest = tmp_path / "model.pt", tmp_path / "model.enc"
    data = b"layer" * 3000
    src.write_bytes(data)
    # When it is encrypted body-first, with the digest recorded under "sha256"
    result = encrypt_file(
        src,
        dest,
        keyring=keyring,
        key_id=KEY_NAME,
        context=CONTEXT,
        frame_length=1024,
        context_digest_key="sha256",
    )
    # Then the header (written last, placed first) carries the digest, and the library decrypts it all
    digest = hashlib.sha256(data).hexdigest()
    assert result.context == {**CONTEXT, "sha256": digest}
    plaintext, header = sdk.decrypt(source=dest.read_bytes(), key_provider=sdk_raw_provider)
    assert plaintext == data
    assert header.encryption_context["sha256"] == digest
    # And ModelShield decrypts it while insisting on that digest
    out = tmp_path / "plain"
    decrypt_file(dest, out, expect=Expectation(keyring, {"sha256": digest}))
    assert out.read_bytes() == data


def test_header_after_body_refuses_a_context_that_already_has_the_digest_key(
    keyring: StaticKeyring, tmp_path: Path
) -> None:
    src = tmp_path / "m"
    src.write_bytes(b"x")
    with pytest.raises(UsageError, match="already has 'sha256'"):
        encrypt_file(
            src,
            tmp_path / "o",
            keyring=keyring,
            key_id=KEY_NAME,
            context={"sha256": "0"},
            frame_length=1024,
            context_digest_key="sha256",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_known_digest_is_checked_against_the_bytes_actually_encrypted(
    keyring: StaticKeyring, tmp_path: Path
) -> None:
    # Given the digest the pipeline computed while downloading, and a file that has changed since
    src, dest = tmp_path / "m", tmp_path / "m.enc"
    src.write_bytes(b"original")
    known = hashlib.sha256(b"original").hexdigest()
    encrypt_file(src, dest, keyring=keyring, key_id=KEY_NAME, context=CONTEXT, plaintext_sha256=known)
    src.write_bytes(b"changed!")
    dest.unlink()
    # When it is encrypted with that digest, Then IntegrityError and no output
    with pytest.raises(IntegrityError, match="changed since hashing"):
        encrypt_file(src, dest, keyring=keyring, key_id=KEY_NAME, context=CONTEXT, plaintext_sha256=known)
    assert not dest.exists()


def test_decrypt_to_with_a_pinned_digest_refuses_other_plaintext(
    keyring: StaticKeyring, tmp_path: Path
) -> None:
    message = encrypt_bytes(b"model bytes", keyring)
    with pytest.raises(IntegrityError):
        decrypt_to(
            io.BytesIO(message),
            tmp_path / "m",
            expected_sha256="00" * 32,
            expect=Expectation(keyring, CONTEXT),
        )
    assert list(tmp_path.iterdir()) == []


def test_read_only_and_short_reading_streams_work_both_ways(keyring: StaticKeyring) -> None:
    # Given a source that has only read() and returns at most 700 bytes per call
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    sealed = io.BytesIO()
    result = encrypt_stream(
        ZeroStream(50_000, max_read=700), sealed, data_key=data_key, context=CONTEXT, frame_length=1024
    )
    # Then the message is complete, and decrypting through a read()-only wrapper gives it back

    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 333) if n > 0 else n)

    out = io.BytesIO()
    decrypted = decrypt_stream(ReadOnly(sealed.getvalue()), out, expect=Expectation(keyring, CONTEXT))
    assert out.getvalue() == bytes(50_000)
    assert decrypted.plaintext_sha256 == result.plaintext_sha256 == hashlib.sha256(bytes(50_000)).hexdigest()


def test_every_write_carries_whole_frames(keyring: StaticKeyring) -> None:
    # Given 3 frames per write and 10.5 frames of plaintext
    sink = CountingSink()
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    result = encrypt_stream(
        ZeroStream(10 * 1024 + 512),
        sink,
        data_key=data_key,
        context=CONTEXT,
        frame_length=1024,
        frames_per_write=3,
    )
    # Then: the header, then 3 regular frames per write, then the rest with the final frame
    regular = sealed_frame_size(1024, False)
    assert sink.writes == [
        result.header_length,
        3 * regular,
        3 * regular,
        3 * regular,
        regular + sealed_frame_size(512, True),
    ]
    assert result.frame_count == 11
    assert sum(sink.writes) == result.ciphertext_size


def test_empty_input_is_one_empty_final_frame(keyring: StaticKeyring) -> None:
    message = encrypt_bytes(b"", keyring)
    out = io.BytesIO()
    result = decrypt_stream(io.BytesIO(message), out, expect=Expectation(keyring, CONTEXT))
    assert out.getvalue() == b"" and result.frame_count == 1
    _, header_length = parse_header(io.BytesIO(message))
    assert len(message) == header_length + sealed_frame_size(0, True)


def test_hashing_can_be_skipped_when_the_digest_is_known_elsewhere(keyring: StaticKeyring) -> None:
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    result = encrypt_stream(
        io.BytesIO(b"abc"),
        io.BytesIO(),
        data_key=data_key,
        context=CONTEXT,
        frame_length=1024,
        hash_plaintext=False,
    )
    assert result.plaintext_sha256 is None


def _peak_while_encrypting(keyring: StaticKeyring, size: int) -> int:
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    tracemalloc.start()
    try:
        encrypt_stream(
            ZeroStream(size), CountingSink(), data_key=data_key, context=CONTEXT, frame_length=1 << 20
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_whatever_the_input_size(keyring: StaticKeyring) -> None:
    # Given inputs of 24 MiB and 96 MiB streamed from a source that never holds them
    small = _peak_while_encrypting(keyring, 24 << 20)
    large = _peak_while_encrypting(keyring, 96 << 20)
    # Then peak allocation is a few chunk buffers (~4 MiB each), the same for both sizes
    assert large < 64 << 20
    assert abs(large - small) < 4 << 20


@pytest.mark.parametrize("frame_length", [0, 100, 1000, -128, 512 * 1024 * 1024])
def test_frame_lengths_the_reference_library_would_refuse_are_refused(
    frame_length: int, keyring: StaticKeyring
) -> None:
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    with pytest.raises(UsageError, match="frame length"):
        encrypt_stream(
            io.BytesIO(b"x"), io.BytesIO(), data_key=data_key, context=CONTEXT, frame_length=frame_length
        )


def test_missing_input_and_missing_output_directory_are_clear_errors(
    keyring: StaticKeyring, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactNotFound, match="does not exist"):
        encrypt_file(tmp_path / "absent", tmp_path / "out", keyring=keyring, key_id=KEY_NAME, context={})
    (tmp_path / "m").write_bytes(b"x")
    with pytest.raises(ArtifactNotFound, match="output directory"):
        encrypt_file(tmp_path / "m", tmp_path / "no" / "out", keyring=keyring, key_id=KEY_NAME, context={})
    with pytest.raises(ArtifactNotFound, match="does not exist"):
        decrypt_file(tmp_path / "absent", tmp_path / "out", expect=Expectation(keyring, None))
