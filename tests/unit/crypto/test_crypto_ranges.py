"""Range-parallel encryption: the message built from independently sealed ranges is one valid message.

The reference library decrypts it, ModelShield's sequential decryptor decrypts it, and the per-range
verifier (`open_range`) accepts it; reordered, dropped, duplicated or cut ranges are rejected by all.
"""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Any

import pytest
from modelshield.crypto.envelope import FrameCipher, derive_keys, open_header, parse_header
from modelshield.crypto.keyring import StaticKeyring
from modelshield.crypto.ranges import Range, RangeEncryptor, open_range, plan_ranges
from modelshield.crypto.streams import Expectation, decrypt_stream, encrypt_frames
from modelshield.errors import EnvelopeError, UsageError

from tests.unit.crypto.envelope_helpers import CONTEXT

FRAME = 1024
RANGE = 4 * FRAME


def _plaintext(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest()
    return (block * (size // 32 + 1))[:size]


def _range_encrypt(data: bytes, keyring: StaticKeyring, *, workers: int = 3) -> tuple[bytes, list[bytes]]:
    """Encrypt `data` by range on `workers` threads; return (message, sealed ranges in order)."""
    encryptor = RangeEncryptor(len(data), frame_length=FRAME, range_size=RANGE)
    sealed: dict[int, bytes] = {}
    lock = threading.Lock()

    def emit(rng: Range, frames: bytearray) -> None:
        with lock:
            sealed[rng.index] = bytes(frames)

    pending = encryptor.run(lambda r: data[r.start : r.end], emit, workers=workers)
    header, result = pending.finish(keyring=keyring, key_id="static-key", context=CONTEXT)
    assert result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    parts = [sealed[i] for i in range(len(encryptor.ranges))]
    return header + b"".join(parts), parts


def _decrypt(message: bytes, keyring: StaticKeyring) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(message), out, expect=Expectation(keyring, CONTEXT))
    return out.getvalue()


SIZES = [0, 1, FRAME - 1, FRAME, RANGE - 1, RANGE, RANGE + 1, 3 * RANGE, 3 * RANGE + 517]


@pytest.mark.parametrize("size", SIZES)
def test_a_range_encrypted_message_is_what_the_reference_library_decrypts(
    size: int, keyring: StaticKeyring, sdk: Any, sdk_raw_provider: Any
) -> None:
    # Given a plaintext around frame and range boundaries, encrypted range by range on three threads
    data = _plaintext(size)
    message, _ = _range_encrypt(data, keyring)
    # When the official library and ModelShield's sequential decryptor read it
    plaintext, header = sdk.decrypt(source=message, key_provider=sdk_raw_provider)
    # Then both get the plaintext back, with the context and framing we asked for
    assert plaintext == data
    assert header.encryption_context == CONTEXT
    assert header.frame_length == FRAME
    assert _decrypt(message, keyring) == data


@pytest.mark.parametrize("size", [0, RANGE, 3 * RANGE + 517])
def test_range_encryption_writes_the_same_body_as_sequential_encryption(
    size: int, keyring: StaticKeyring
) -> None:
    # Given one message encrypted by range
    data = _plaintext(size)
    message, _ = _range_encrypt(data, keyring)
    header, offset = parse_header(io.BytesIO(message))
    # When its body is compared with the sequential encryptor's frames under the same key material
    data_key = keyring.unwrap(header.encrypted_data_keys, header.context)
    encryption_key, _ = derive_keys(data_key.plaintext, header.message_id)
    cipher = FrameCipher(encryption_key, header.message_id)
    sequential = io.BytesIO()
    encrypt_frames(io.BytesIO(data), sequential, cipher=cipher, frame_length=FRAME)
    # Then they are byte for byte the same frames
    assert message[offset:] == sequential.getvalue()


def test_every_range_verifies_on_its_own(keyring: StaticKeyring) -> None:
    # Given a range-encrypted message of four ranges
    data = _plaintext(3 * RANGE + 517)
    message, parts = _range_encrypt(data, keyring)
    header, _ = parse_header(io.BytesIO(message))
    cipher = open_header(header, keyring.unwrap(header.encrypted_data_keys, header.context).plaintext)
    ranges = plan_ranges(len(data), frame_length=FRAME, range_size=RANGE)
    # When each stored range is opened independently, in any order
    opened = {r.index: bytes(open_range(header, cipher, r, parts[r.index])) for r in reversed(ranges)}
    # Then each decrypts to its plaintext range
    assert b"".join(opened[i] for i in range(len(ranges))) == data


@pytest.mark.parametrize(
    "rearrange",
    [
        pytest.param(lambda p: [p[0], p[2], p[1], p[3]], id="reordered"),
        pytest.param(lambda p: [p[0], p[1], p[3]], id="dropped"),
        pytest.param(lambda p: [p[0], p[1], p[1], p[2], p[3]], id="duplicated"),
        pytest.param(lambda p: [p[0], p[1], p[2]], id="final-part-dropped"),
        pytest.param(lambda p: [p[0], p[1], p[2], p[3][:-1]], id="truncated"),
    ],
)
def test_rearranged_parts_are_rejected_by_every_reader(
    rearrange: Any, keyring: StaticKeyring, sdk: Any, sdk_raw_provider: Any
) -> None:
    # Given a message of four range parts, rearranged
    data = _plaintext(3 * RANGE + 517)
    message, parts = _range_encrypt(data, keyring)
    header_bytes = message[: len(message) - sum(map(len, parts))]
    tampered = header_bytes + b"".join(rearrange(parts))
    # When it is decrypted, sequentially or by the reference library
    # Then both refuse it
    with pytest.raises(EnvelopeError):
        _decrypt(tampered, keyring)
    with pytest.raises(Exception):  # the library raises its own error types
        sdk.decrypt(source=tampered, key_provider=sdk_raw_provider)


def test_a_range_in_the_wrong_position_fails_per_range_verification(keyring: StaticKeyring) -> None:
    # Given two ranges of one message
    data = _plaintext(3 * RANGE + 517)
    message, parts = _range_encrypt(data, keyring)
    header, _ = parse_header(io.BytesIO(message))
    cipher = open_header(header, keyring.unwrap(header.encrypted_data_keys, header.context).plaintext)
    ranges = plan_ranges(len(data), frame_length=FRAME, range_size=RANGE)
    # When range 2's bytes are presented as range 1, or a middle range as the last
    # Then verification names the frame order problem
    with pytest.raises(EnvelopeError, match="out of order"):
        open_range(header, cipher, ranges[1], parts[2])
    with pytest.raises(EnvelopeError):
        open_range(header, cipher, ranges[3], parts[2] + b"\0" * (ranges[3].sealed_size - len(parts[2])))


def test_an_object_that_changes_while_encrypting_is_an_error(keyring: StaticKeyring) -> None:
    # Given a reader that returns a short range (the object shrank under us)
    encryptor = RangeEncryptor(3 * RANGE, frame_length=FRAME, range_size=RANGE)
    # When the ranges are encrypted
    # Then it fails, naming the range
    with pytest.raises(EnvelopeError, match="range 1 read"):
        encryptor.run(lambda r: b"x" * (r.size - (1 if r.index == 1 else 0)), lambda r, f: None, workers=2)


def test_ranges_are_whole_frames_and_only_the_last_holds_the_final_frame() -> None:
    ranges = plan_ranges(2 * RANGE, frame_length=FRAME, range_size=RANGE)
    assert [(r.start, r.end, r.first_sequence, r.final) for r in ranges] == [
        (0, RANGE, 1, False),
        (RANGE, 2 * RANGE, 5, True),
    ]
    # an exact multiple of the frame length ends with an empty final frame
    assert ranges[1].sealed_size == 4 * (16 + FRAME + 16) + (24 + 16)
    with pytest.raises(UsageError, match="multiple of the frame length"):
        plan_ranges(10, frame_length=FRAME, range_size=FRAME + 1)


def test_memory_in_flight_is_bounded_by_the_worker_window(keyring: StaticKeyring) -> None:
    # Given 40 ranges and 2 workers
    encryptor = RangeEncryptor(40 * RANGE, frame_length=FRAME, range_size=RANGE)
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def read(r: Range) -> bytes:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        return bytes(r.size)

    def emit(r: Range, frames: bytearray) -> None:
        pass

    def progress(n: int) -> None:
        nonlocal in_flight
        with lock:
            in_flight -= 1

    # When they are encrypted
    encryptor.run(read, emit, workers=2, progress=progress)
    # Then never more than workers + 1 ranges were held at once
    assert peak <= 3
