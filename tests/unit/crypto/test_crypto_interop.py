"""Interoperability with aws-encryption-sdk both ways, and the known-answer vectors it produced.

These use a static wrapping key on both sides (the KMS path is in test_crypto_kms.py), so they isolate
the message format itself: header, context, key derivation, commitment, frames, final frame.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import StaticKeyring
from modelshield.crypto.streams import Expectation, decrypt_stream

from tests.unit.crypto.envelope_helpers import CONTEXT, encrypt_bytes, sdk_encrypt

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "esdk_v2_0478_raw_aes.json"
SIZES = [0, 1, 127, 1023, 1024, 1025, 2048, 3000, 4096, 10_000]


def _decrypt(message: bytes, keyring: StaticKeyring, expected: dict[str, str] | None = CONTEXT) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(message), out, expect=Expectation(keyring, expected))
    return out.getvalue()


@pytest.mark.parametrize("size", SIZES)
def test_what_modelshield_writes_the_reference_library_decrypts(
    size: int, keyring: StaticKeyring, sdk: Any, sdk_raw_provider: Any
) -> None:
    # Given a plaintext around frame boundaries, encrypted by ModelShield with 1 KiB frames
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    message = encrypt_bytes(data, keyring, frame_length=1024)
    # When the official library decrypts it
    plaintext, header = sdk.decrypt(source=message, key_provider=sdk_raw_provider)
    # Then it gets the plaintext, the context, and sees the same framing
    assert plaintext == data
    assert header.encryption_context == CONTEXT
    assert header.frame_length == 1024
    assert header.algorithm.algorithm_id == 0x0478


@pytest.mark.parametrize("size", SIZES)
def test_what_the_reference_library_writes_modelshield_decrypts(
    size: int, keyring: StaticKeyring, sdk_raw_provider: Any
) -> None:
    data = bytes((i * 7) % 251 for i in range(size))
    message = sdk_encrypt(data, sdk_raw_provider, CONTEXT, frame_length=1024)
    assert _decrypt(message, keyring) == data


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=3000),
    frame_units=st.integers(min_value=1, max_value=12),
    context=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4),
)
def test_round_trip_through_the_reference_library_for_any_input(
    data: bytes, frame_units: int, context: dict[str, str]
) -> None:
    # Given any plaintext, frame length (a multiple of 128) and context
    from tests.unit.crypto.envelope_helpers import raw_provider, sdk_client, static_keyring

    context = {k: v for k, v in context.items() if not k.startswith("aws-crypto-")}
    keyring, provider = static_keyring(), raw_provider()
    frame_length = 128 * frame_units
    # When ModelShield encrypts and the library decrypts, and the other way round
    ours = encrypt_bytes(data, keyring, context=context, frame_length=frame_length)
    theirs = sdk_encrypt(data, provider, context, frame_length)
    plaintext, header = sdk_client().decrypt(source=ours, key_provider=provider)
    # Then both directions give back the plaintext and the context
    assert plaintext == data and header.encryption_context == context
    assert _decrypt(theirs, keyring, expected=context) == data


def test_the_known_answer_vectors_decrypt_with_modelshield() -> None:
    # Given vectors produced by the reference library (tests/vectors/make_vectors.py) with a raw key
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    keyring = StaticKeyring(
        bytes.fromhex(document["wrapping_key_hex"]),
        provider_id=document["provider_id"],
        key_name=document["key_name"],
    )
    assert len(document["vectors"]) >= 10
    for vector in document["vectors"]:
        message = bytes.fromhex(vector["ciphertext_hex"])
        # When ModelShield parses and decrypts each one with the vector's key
        header, _ = parse_header(io.BytesIO(message))
        out = io.BytesIO()
        result = decrypt_stream(
            io.BytesIO(message), out, expect=Expectation(keyring, vector["encryption_context"])
        )
        # Then header fields, plaintext and digest are exactly the recorded ones
        assert header.frame_length == vector["frame_length"], vector["name"]
        assert dict(header.context) == vector["encryption_context"], vector["name"]
        assert out.getvalue().hex() == vector["plaintext_hex"], vector["name"]
        assert result.plaintext_sha256 == vector["plaintext_sha256"], vector["name"]
        assert result.message_id == header.message_id.hex()


def test_a_known_answer_vector_with_one_bit_flipped_fails() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    keyring = StaticKeyring(
        bytes.fromhex(document["wrapping_key_hex"]),
        provider_id=document["provider_id"],
        key_name=document["key_name"],
    )
    message = bytearray(bytes.fromhex(document["vectors"][4]["ciphertext_hex"]))
    message[-20] ^= 0x01  # inside the final frame's ciphertext
    from modelshield.errors import EnvelopeError

    with pytest.raises(EnvelopeError, match="failed authentication"):
        decrypt_stream(io.BytesIO(bytes(message)), io.BytesIO(), expect=Expectation(keyring, None))
