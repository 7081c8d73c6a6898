"""The wire format on its own: context encoding, key derivation, header build/parse, frames and limits."""

from __future__ import annotations

import io
import struct

import pytest
from modelshield.crypto import envelope
from modelshield.crypto.envelope import (
    EncryptedDataKey,
    FrameCipher,
    ReadLimits,
    build_header,
    check_context,
    derive_keys,
    open_header,
    parse_context,
    parse_header,
    serialize_context,
)
from modelshield.crypto.keyring import StaticKeyring
from modelshield.crypto.streams import Expectation
from modelshield.errors import EnvelopeError

from tests.unit.crypto.envelope_helpers import CONTEXT, encrypt_bytes

EDK = EncryptedDataKey("aws-kms", b"arn:aws:kms:us-east-1:111122223333:key/abc", b"\x01" * 40)


# -- encryption context ---------------------------------------------------------------------------
def test_context_is_serialized_sorted_by_key_bytes_with_length_prefixes() -> None:
    # Given a context given in non-sorted order
    context = {"b": "2", "a": "1", "B": "3"}
    # When it is serialized
    data = serialize_context(context)
    # Then it is: count, then (len, key, len, value) sorted by the UTF-8 key bytes ("B" < "a" < "b")
    expected = struct.pack(">H", 3) + b"".join(
        struct.pack(">H", 1) + k + struct.pack(">H", 1) + v
        for k, v in ((b"B", b"3"), (b"a", b"1"), (b"b", b"2"))
    )
    assert data == expected
    assert parse_context(data) == context


def test_empty_context_is_the_empty_string() -> None:
    assert serialize_context({}) == b""
    assert parse_context(b"") == {}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (struct.pack(">H", 0), "0 entries"),
        (struct.pack(">HH1sH1sH1sH1s", 2, 1, b"b", 1, b"x", 1, b"a", 1, b"y"), "canonical"),
        (struct.pack(">HH1sH1sH1sH1s", 2, 1, b"a", 1, b"x", 1, b"a", 1, b"y"), "canonical"),
        (struct.pack(">HH1sH1s", 1, 1, b"a", 1, b"x") + b"!", "trailing"),
        (struct.pack(">HH1sH", 1, 1, b"a", 9) + b"x", "past the end"),
        (struct.pack(">HH1sH1s", 1, 1, b"\xff", 1, b"x"), "UTF-8"),
    ],
)
def test_non_canonical_or_malformed_context_is_rejected(data: bytes, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=problem):
        parse_context(data)


def test_reserved_context_prefix_and_oversized_context_are_refused_on_write() -> None:
    with pytest.raises(EnvelopeError, match="reserved"):
        build_header(data_key=b"k" * 32, context={"aws-crypto-public-key": "x"}, encrypted_data_keys=[EDK])
    with pytest.raises(EnvelopeError, match="65535"):
        serialize_context({"k": "v" * 70_000})


def test_check_context_requires_expected_pairs_and_optionally_refuses_extra_keys() -> None:
    actual = {"artifact": "a", "version": "1", "extra": "x"}
    check_context(actual, {"artifact": "a"})  # subset: fine by default
    check_context(actual, None)  # no expectation: no check
    with pytest.raises(EnvelopeError, match="different value for artifact"):
        check_context(actual, {"artifact": "b"})
    with pytest.raises(EnvelopeError, match="missing sha256"):
        check_context(actual, {"artifact": "a", "sha256": "00"})
    with pytest.raises(EnvelopeError, match="unexpected extra, version"):
        check_context(actual, {"artifact": "a"}, allow_extra=False)


# -- key derivation -------------------------------------------------------------------------------
def test_key_derivation_matches_the_reference_library() -> None:
    # Given the reference library's own derivation functions as the oracle
    from aws_encryption_sdk.identifiers import Algorithm
    from aws_encryption_sdk.internal.crypto.data_keys import (
        calculate_commitment_key,
        derive_data_encryption_key,
    )

    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    data_key, message_id = bytes(range(32)), bytes(range(32, 64))
    # When ModelShield derives the message keys
    encryption_key, commitment_key = derive_keys(data_key, message_id)
    # Then both equal the library's, and differ from each other and from the data key
    assert encryption_key == derive_data_encryption_key(data_key, suite, message_id)
    assert commitment_key == calculate_commitment_key(data_key, suite, message_id)
    assert len({encryption_key, commitment_key, data_key}) == 3


def test_wrong_sized_keys_are_refused() -> None:
    with pytest.raises(EnvelopeError, match="data key"):
        derive_keys(b"short", bytes(32))
    with pytest.raises(EnvelopeError, match="message id"):
        derive_keys(bytes(32), bytes(16))


# -- header ---------------------------------------------------------------------------------------
def test_header_round_trips_through_parse_and_authenticates() -> None:
    # Given a header built for a context and one KMS data key
    header, _ = build_header(
        data_key=b"k" * 32, context=CONTEXT, encrypted_data_keys=[EDK], frame_length=4096
    )
    # When it is parsed back from its bytes (followed by body bytes)
    parsed, length = parse_header(io.BytesIO(header.to_bytes() + b"body"))
    # Then every field survives, the length points at the body, and the tag verifies under the key
    assert length == len(header.to_bytes())
    assert parsed == header
    assert dict(parsed.context) == CONTEXT
    assert parsed.encrypted_data_keys[0].key_arn == EDK.provider_info.decode()
    open_header(parsed, b"k" * 32)
    with pytest.raises(EnvelopeError, match="key commitment"):
        open_header(parsed, b"x" * 32)


def test_header_starts_with_version_2_and_suite_0478() -> None:
    header, _ = build_header(data_key=b"k" * 32, context={}, encrypted_data_keys=[EDK])
    data = header.to_bytes()
    assert data[:3] == b"\x02\x04\x78"
    assert data[35:37] == b"\x00\x00"  # empty context: AAD length 0 and no AAD bytes
    assert struct.unpack(">I", data[-16 - 32 - 4 : -16 - 32])[0] == envelope.DEFAULT_FRAME_LENGTH


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: b"\x01" + b[1:], "version byte 0x01"),
        (lambda b: b[:1] + b"\x05\x78" + b[3:], "suite 0x0578"),
        (lambda b: b[:1] + b"\x03\x78" + b[3:], "suite 0x0378"),
    ],
)
def test_other_versions_and_suites_are_refused(mutate: object, problem: str) -> None:
    header, _ = build_header(data_key=b"k" * 32, context={}, encrypted_data_keys=[EDK])
    with pytest.raises(EnvelopeError, match=problem):
        parse_header(io.BytesIO(mutate(header.to_bytes())))  # type: ignore[operator]


def _header_with(frame_length: int = 1024, edks: int = 1, context: dict[str, str] | None = None) -> bytes:
    header, _ = build_header(
        data_key=b"k" * 32, context=context or {}, encrypted_data_keys=[EDK] * edks, frame_length=frame_length
    )
    return header.to_bytes()


def test_limits_are_enforced_before_allocation() -> None:
    # Given headers that declare a large frame, many data keys, a big context
    big_frame = _header_with(frame_length=2**30)
    many_keys = _header_with(edks=9)
    big_context = _header_with(context={"k": "v" * 5000})
    # Then the defaults (or tighter caller limits) refuse them
    with pytest.raises(EnvelopeError, match="frame length"):
        parse_header(io.BytesIO(big_frame))
    with pytest.raises(EnvelopeError, match="9 encrypted data keys"):
        parse_header(io.BytesIO(many_keys))
    with pytest.raises(EnvelopeError, match="exceeds the limit"):
        parse_header(io.BytesIO(big_context), ReadLimits(max_context_bytes=1000))
    parse_header(io.BytesIO(big_frame), ReadLimits(max_frame_length=2**30))  # a caller may raise them


def test_zero_data_keys_non_framed_and_zero_frame_length_are_refused() -> None:
    good = _header_with()
    edk_count_at = 37  # empty context: EDK count follows the AAD length
    no_keys = good[:edk_count_at] + b"\x00\x00" + good[edk_count_at + 2 :]
    with pytest.raises(EnvelopeError, match="no encrypted data keys"):
        parse_header(io.BytesIO(no_keys))
    content_type_at = len(good) - 16 - 32 - 4 - 1
    non_framed = good[:content_type_at] + b"\x01" + good[content_type_at + 1 :]
    with pytest.raises(EnvelopeError, match="not framed"):
        parse_header(io.BytesIO(non_framed))
    zero_frames = good[: content_type_at + 1] + b"\x00" * 4 + good[content_type_at + 5 :]
    with pytest.raises(EnvelopeError, match="frame length 0"):
        parse_header(io.BytesIO(zero_frames))


def test_every_truncation_of_a_header_is_reported_as_truncated() -> None:
    data = _header_with(context={"a": "b"})
    for cut in range(len(data)):
        with pytest.raises(EnvelopeError, match="truncated"):
            parse_header(io.BytesIO(data[:cut]))


# -- frames ---------------------------------------------------------------------------------------
def test_frame_ivs_are_the_sequence_number_padded_to_12_bytes() -> None:
    assert envelope.frame_iv(1) == bytes(11) + b"\x01"
    assert envelope.frame_iv(0x01020304) == bytes(8) + b"\x01\x02\x03\x04"


def test_sequence_numbers_stop_at_the_format_limit() -> None:
    cipher = FrameCipher(b"k" * 32, bytes(32))
    out = memoryview(bytearray(64))
    with pytest.raises(EnvelopeError, match="2\\^32 - 1 frames"):
        cipher.seal_into(0, True, memoryview(b""), out)
    with pytest.raises(EnvelopeError, match="2\\^32 - 1 frames"):
        cipher.seal_into(envelope.MAX_FRAME_COUNT, False, memoryview(b""), out)
    assert cipher.seal_into(envelope.MAX_FRAME_COUNT, True, memoryview(b""), out) == 40  # final may use it


def test_frame_count_and_plaintext_limits_apply_while_reading(keyring: StaticKeyring) -> None:
    from modelshield.crypto.streams import decrypt_stream

    message = encrypt_bytes(b"x" * 5000, keyring, frame_length=1024)  # 5 frames
    with pytest.raises(EnvelopeError, match="more than 3 frames"):
        decrypt_stream(
            io.BytesIO(message),
            io.BytesIO(),
            expect=Expectation(keyring, None, limits=ReadLimits(max_frames=3)),
        )
    with pytest.raises(EnvelopeError, match="plaintext limit"):
        decrypt_stream(
            io.BytesIO(message),
            io.BytesIO(),
            expect=Expectation(keyring, None, limits=ReadLimits(max_plaintext_bytes=4000)),
        )
