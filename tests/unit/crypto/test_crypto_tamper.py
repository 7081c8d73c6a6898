"""Tampering: every modification of a message is rejected, and no plaintext is ever published.

The message under test has a 1 KiB frame length and 3500 bytes of plaintext: three regular frames and
a final frame of 428 bytes, so each rule (sequence, IV, lengths, tags, final frame) is exercised.
Field offsets come from an independent walk of the layout in the specification (`_layout`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from modelshield.crypto.envelope import EncryptedDataKey, derive_keys, parse_header
from modelshield.crypto.keyring import DataKey, StaticKeyring
from modelshield.crypto.streams import Expectation, decrypt_stream, decrypt_to
from modelshield.errors import EnvelopeError, KeyAccessError

from tests.unit.crypto.envelope_helpers import CONTEXT, KEY_NAME, encrypt_bytes

FRAME = 1024
PLAINTEXT = bytes(range(256)) * 13 + bytes(172)  # 3500 bytes
# Header fields the wrapped data key depends on: changing them makes unwrapping fail first
# (the context is the wrap's AAD, and KMS binds it the same way), which is a KeyAccessError.
KEY_FIELDS = {
    "aad_length",
    "context",
    "edk_count",
    "provider_id_length",
    "provider_id",
    "provider_info_length",
    "provider_info",
    "edk_length",
    "edk",
}


def _layout(message: bytes, frame_length: int = FRAME) -> dict[str, tuple[int, int]]:
    """Field name -> (start, end) for the header and every frame, walking the spec's layout."""
    fields: dict[str, tuple[int, int]] = {}
    pos = 0

    def take(name: str, size: int) -> bytes:
        nonlocal pos
        fields[name] = (pos, pos + size)
        pos += size
        return message[pos - size : pos]

    take("version", 1)
    take("suite", 2)
    take("message_id", 32)
    (aad_length,) = struct.unpack(">H", take("aad_length", 2))
    take("context", aad_length)
    take("edk_count", 2)
    take("provider_id", struct.unpack(">H", take("provider_id_length", 2))[0])
    take("provider_info", struct.unpack(">H", take("provider_info_length", 2))[0])
    take("edk", struct.unpack(">H", take("edk_length", 2))[0])
    take("content_type", 1)
    take("frame_length", 4)
    take("commitment_key", 32)
    take("header_tag", 16)
    number = 1
    while pos < len(message):
        if message[pos : pos + 4] == b"\xff\xff\xff\xff":
            take("final.marker", 4)
            take("final.sequence", 4)
            take("final.iv", 12)
            (length,) = struct.unpack(">I", take("final.length", 4))
            take("final.body", length)
            take("final.tag", 16)
            break
        take(f"frame{number}.sequence", 4)
        take(f"frame{number}.iv", 12)
        take(f"frame{number}.body", frame_length)
        take(f"frame{number}.tag", 16)
        number += 1
    return fields


@pytest.fixture
def message(keyring: StaticKeyring) -> bytes:
    return encrypt_bytes(PLAINTEXT, keyring, frame_length=FRAME)


def _frames(message: bytes) -> tuple[bytes, list[bytes]]:
    """(header, [frame bytes...]) split on the layout."""
    layout = _layout(message)
    header = message[: layout["header_tag"][1]]
    frames, start = [], len(header)
    for name, (_, end) in layout.items():
        if name.endswith(".tag") and name != "header_tag":
            frames.append(message[start:end])
            start = end
    return header, frames


def _decrypt(data: bytes, keyring: StaticKeyring, expected: Mapping[str, str] | None = CONTEXT) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, expect=Expectation(keyring, expected))
    return out.getvalue()


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def test_the_untouched_message_decrypts_and_has_the_expected_layout(
    message: bytes, keyring: StaticKeyring
) -> None:
    layout = _layout(message)
    assert "frame3.tag" in layout and "frame4.sequence" not in layout
    assert layout["final.tag"][1] == len(message)
    assert _decrypt(message, keyring) == PLAINTEXT


def test_flipping_any_single_bit_anywhere_is_rejected(message: bytes, keyring: StaticKeyring) -> None:
    # Given every byte position of the message, and the field each one belongs to
    owner = {i: name for name, (start, end) in _layout(message).items() for i in range(start, end)}
    assert len(owner) == len(message)
    for position in range(len(message)):
        # When that one byte is changed
        # Then decryption fails: a KeyAccessError for the wrapped-key fields, an EnvelopeError otherwise
        field = owner[position]
        allowed = (EnvelopeError, KeyAccessError) if field in KEY_FIELDS else (EnvelopeError,)
        with pytest.raises(allowed):
            _decrypt(_flip(message, position), keyring)


EXPECTED_ERRORS = {
    "version": "version byte",
    "suite": "unsupported algorithm suite",
    "message_id": "key commitment",
    "content_type": "not framed",
    "frame_length": "header authentication failed",
    "commitment_key": "key commitment",
    "header_tag": "header authentication failed",
    "frame2.sequence": "out of order",
    "frame2.iv": "non-canonical IV",
    "frame2.body": "frame 2 failed authentication",
    "frame2.tag": "frame 2 failed authentication",
    "final.marker": "out of order",
    "final.sequence": "out of order",
    "final.iv": "non-canonical IV",
    "final.length": "frame 4 failed authentication",
    "final.body": "frame 4 failed authentication",
    "final.tag": "frame 4 failed authentication",
}


@pytest.mark.parametrize("field", sorted(EXPECTED_ERRORS))
def test_a_modified_field_is_named_in_the_error_and_nothing_is_published(
    field: str, message: bytes, keyring: StaticKeyring, tmp_path: Path
) -> None:
    # Given a message with one byte changed in the middle of `field`
    start, end = _layout(message)[field]
    position = start + (end - start) // 2
    if field == "final.length":
        position = end - 2  # 428 -> 172 or 684: a different length, still a plausible one
    tampered = _flip(message, position)
    dest = tmp_path / "model.bin"
    # When it is decrypted to a file
    with pytest.raises(EnvelopeError, match=EXPECTED_ERRORS[field]):
        decrypt_to(io.BytesIO(tampered), dest, expect=Expectation(keyring, CONTEXT))
    # Then the destination does not exist and no staging file is left behind
    assert list(tmp_path.iterdir()) == []


def test_a_final_frame_longer_than_the_frame_length_is_refused_before_reading_it(
    message: bytes, keyring: StaticKeyring
) -> None:
    start, end = _layout(message)["final.length"]
    claims_more = message[:start] + struct.pack(">I", FRAME + 1) + message[end:]
    with pytest.raises(EnvelopeError, match="final frame claims 1025 bytes"):
        _decrypt(claims_more, keyring)


def test_every_truncation_is_rejected_and_frame_boundaries_say_final_frame_missing(
    message: bytes, keyring: StaticKeyring
) -> None:
    layout = _layout(message)
    boundaries = {
        end for name, (_, end) in layout.items() if name.endswith("tag") and not name.startswith("final")
    }
    assert len(boundaries) == 4  # after the header and after each regular frame
    for cut in range(len(message)):
        with pytest.raises(EnvelopeError, match="truncated") as failure:
            _decrypt(message[:cut], keyring)
        if cut in boundaries:
            assert "without a final frame" in str(failure.value)


def test_bytes_after_the_final_frame_are_rejected(message: bytes, keyring: StaticKeyring) -> None:
    with pytest.raises(EnvelopeError, match="after the final frame"):
        _decrypt(message + b"\x00", keyring)


@pytest.mark.parametrize(
    ("reorder", "problem"),
    [
        (lambda f: [f[1], f[0], f[2], f[3]], "expected frame 1, found 2"),
        (lambda f: [f[0], f[2], f[3]], "expected frame 2, found 3"),
        (lambda f: [f[0], f[0], f[1], f[2], f[3]], "expected frame 2, found 1"),
        (lambda f: [f[0], f[1], f[2], f[2], f[3]], "expected frame 4, found 3"),
        (lambda f: [f[3], f[0], f[1], f[2]], "expected frame 1, found 4"),
        (lambda f: [f[0], f[1], f[2]], "without a final frame"),
    ],
    ids=["swap", "drop", "duplicate-first", "duplicate-middle", "final-first", "drop-final"],
)
def test_reordered_dropped_or_duplicated_frames_are_rejected(
    reorder: object, problem: str, message: bytes, keyring: StaticKeyring, tmp_path: Path
) -> None:
    header, frames = _frames(message)
    assert len(frames) == 4
    tampered = header + b"".join(reorder(frames))  # type: ignore[operator]
    with pytest.raises(EnvelopeError, match=problem):
        decrypt_to(io.BytesIO(tampered), tmp_path / "out", expect=Expectation(keyring, CONTEXT))
    assert list(tmp_path.iterdir()) == []


def test_a_frame_spliced_from_another_message_under_the_same_key_is_rejected(
    message: bytes, keyring: StaticKeyring
) -> None:
    # Given a second message with the same plaintext, context and wrapping key (new message id)
    header, frames = _frames(message)
    _, other_frames = _frames(encrypt_bytes(PLAINTEXT, keyring, frame_length=FRAME))
    # When its frame 2 replaces ours (same sequence number, same size)
    spliced = header + frames[0] + other_frames[1] + frames[2] + frames[3]
    # Then the frame's tag does not verify: frames are bound to their message id
    with pytest.raises(EnvelopeError, match="frame 2 failed authentication"):
        _decrypt(spliced, keyring)


class _SpyKeyring(StaticKeyring):
    calls = 0

    def unwrap(self, encrypted_keys: Sequence[EncryptedDataKey], context: Mapping[str, str]) -> DataKey:
        type(self).calls += 1
        return super().unwrap(encrypted_keys, context)


@pytest.mark.parametrize(
    ("expected", "exact", "problem"),
    [
        ({**CONTEXT, "artifact": "models/other.pt"}, False, "different value for artifact"),
        ({**CONTEXT, "sha256": "ab" * 32}, False, "missing sha256"),
        ({"artifact": CONTEXT["artifact"]}, True, "unexpected purpose, version"),
    ],
    ids=["wrong-value", "missing-key", "extra-key-in-exact-mode"],
)
def test_a_context_other_than_the_expected_one_is_refused_before_any_key_is_unwrapped(
    expected: dict[str, str], exact: bool, problem: str, message: bytes, tmp_path: Path
) -> None:
    from tests.unit.crypto.envelope_helpers import PROVIDER_ID, WRAPPING_KEY

    spy = _SpyKeyring(WRAPPING_KEY, provider_id=PROVIDER_ID, key_name=KEY_NAME)
    _SpyKeyring.calls = 0
    with pytest.raises(EnvelopeError, match=problem):
        decrypt_to(
            io.BytesIO(message),
            tmp_path / "m",
            expect=Expectation(spy, expected, allow_extra_context=not exact),
        )
    assert _SpyKeyring.calls == 0
    assert list(tmp_path.iterdir()) == []


def test_a_commitment_key_that_does_not_match_is_rejected_even_with_a_valid_header_tag(
    keyring: StaticKeyring,
) -> None:
    # Given a header whose commitment key was replaced and whose tag was then recomputed correctly
    # (what someone holding the data key could forge): only the commitment check can catch it
    data_key = keyring.generate(KEY_NAME, CONTEXT)
    out = io.BytesIO()
    from modelshield.crypto.streams import encrypt_stream

    encrypt_stream(io.BytesIO(PLAINTEXT), out, data_key=data_key, context=CONTEXT, frame_length=FRAME)
    message = out.getvalue()
    header, length = parse_header(io.BytesIO(message))
    forged_body = header.body[:-32] + bytes(32)
    encryption_key, _ = derive_keys(data_key.plaintext, header.message_id)
    forged_tag = AESGCM(encryption_key).encrypt(bytes(12), b"", forged_body)
    forged = forged_body + forged_tag + message[length:]
    # When it is decrypted, Then the commitment mismatch is the reason given
    with pytest.raises(EnvelopeError, match="key commitment does not match"):
        _decrypt(forged, keyring)


def test_a_failed_decryption_leaves_an_existing_destination_untouched(
    message: bytes, keyring: StaticKeyring, tmp_path: Path
) -> None:
    # Given an existing file at the destination and a message whose last frame is damaged
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"previous model")
    tampered = _flip(message, len(message) - 1)
    # When decryption fails after three frames were already decrypted into staging
    with pytest.raises(EnvelopeError, match="frame 4"):
        decrypt_to(io.BytesIO(tampered), dest, expect=Expectation(keyring, CONTEXT))
    # Then the old file is still there, unchanged, and nothing else is
    assert dest.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]
