"""KMS keyring and interoperability with the official library's KMS provider, under moto."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import KmsKeyring, rewrap_header
from modelshield.crypto.streams import Expectation, decrypt_stream, encrypt_stream
from modelshield.errors import EnvelopeError, KeyAccessError

from tests.unit.crypto.envelope_helpers import CONTEXT, Aws, sdk_client


def _kms_provider(*arns: str) -> Any:
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider

    return StrictAwsKmsMasterKeyProvider(key_ids=list(arns))


def _encrypt(data: bytes, keyring: KmsKeyring, key_id: str, frame_length: int = 1024) -> bytes:
    out = io.BytesIO()
    data_key = keyring.generate(key_id, CONTEXT)
    encrypt_stream(io.BytesIO(data), out, data_key=data_key, context=CONTEXT, frame_length=frame_length)
    return out.getvalue()


def _decrypt(message: bytes, keyring: KmsKeyring, expected: dict[str, str] | None = CONTEXT) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(message), out, expect=Expectation(keyring, expected))
    return out.getvalue()


def test_the_data_key_records_the_key_arn_even_when_asked_by_alias(aws: Aws) -> None:
    # Given a KMS key reached through an alias
    aws.kms.create_alias(AliasName="alias/modelshield-vault", TargetKeyId=aws.key_arn)
    keyring = KmsKeyring(aws.kms)
    # When a data key is generated with the alias
    data_key = keyring.generate("alias/modelshield-vault", CONTEXT)
    # Then the encrypted data key names the key ARN (what the official library records)
    edk = data_key.encrypted_data_key
    assert edk.provider_id == "aws-kms"
    assert edk.provider_info == aws.key_arn.encode()
    assert len(data_key.plaintext) == 32
    assert "plaintext" not in repr(data_key) and data_key.plaintext.hex() not in repr(data_key)


def test_what_modelshield_writes_under_kms_the_reference_library_decrypts(aws: Aws) -> None:
    data = b"tensor" * 2000
    message = _encrypt(data, KmsKeyring(aws.kms), aws.key_arn)
    plaintext, header = sdk_client().decrypt(source=message, key_provider=_kms_provider(aws.key_arn))
    assert plaintext == data
    assert header.encryption_context == CONTEXT
    [edk] = header.encrypted_data_keys
    assert edk.key_provider.provider_id == "aws-kms"
    assert edk.key_provider.key_info == aws.key_arn.encode()


def test_what_the_reference_library_writes_under_kms_modelshield_decrypts(aws: Aws) -> None:
    from aws_encryption_sdk.identifiers import Algorithm

    data = b"weights" * 3000
    message, _ = sdk_client().encrypt(
        source=data,
        key_provider=_kms_provider(aws.key_arn),
        encryption_context=CONTEXT,
        algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        frame_length=2048,
    )
    assert _decrypt(message, KmsKeyring(aws.kms, allowed_key_arns=[aws.key_arn])) == data


def test_kms_refuses_a_different_context(aws: Aws) -> None:
    # Given a message's wrapped data key, and a context that differs from the one it was made with
    keyring = KmsKeyring(aws.kms)
    message = _encrypt(b"x", keyring, aws.key_arn)
    header, _ = parse_header(io.BytesIO(message))
    # When KMS is asked to unwrap it with the other context, Then it refuses
    with pytest.raises(KeyAccessError, match="refused"):
        keyring.unwrap(header.encrypted_data_keys, {**CONTEXT, "purpose": "other"})


def test_strict_mode_never_asks_kms_about_keys_it_was_not_given(aws: Aws) -> None:
    message = _encrypt(b"x", KmsKeyring(aws.kms), aws.key_arn)
    with pytest.raises(KeyAccessError, match="not an allowed key"):
        _decrypt(message, KmsKeyring(aws.kms, allowed_key_arns=[aws.other_key_arn]))


def test_kms_refusals_are_clear_key_access_errors(aws: Aws) -> None:
    # Given a key that does not exist, and a message whose wrapped key was damaged
    keyring = KmsKeyring(aws.kms)
    message = bytearray(_encrypt(b"x", keyring, aws.key_arn))
    header, _ = parse_header(io.BytesIO(bytes(message)))
    blob = header.encrypted_data_keys[0].ciphertext
    at = bytes(message).index(blob) + len(blob) // 2
    message[at] ^= 0x01
    # Then each KMS refusal names the operation, the key and KMS's reason
    with pytest.raises(
        KeyAccessError, match="GenerateDataKey with key alias/missing was refused: NotFoundException"
    ):
        keyring.generate("alias/missing", CONTEXT)
    with pytest.raises(
        KeyAccessError, match=f"Decrypt with key {aws.key_arn} was refused: InvalidCiphertext"
    ):
        _decrypt(bytes(message), keyring)


def test_rewrapped_header_plus_the_original_body_decrypts_under_the_new_key(aws: Aws) -> None:
    # Given a 6-frame message under key A
    keyring = KmsKeyring(aws.kms)
    data = bytes(range(256)) * 20
    message = _encrypt(data, keyring, aws.key_arn)
    old_header, old_length = parse_header(io.BytesIO(message))
    body = message[old_length:]
    # When its header alone is re-wrapped under key B (passing more bytes than the header is fine)
    rewrapped = rewrap_header(
        message[: old_length + 100], keyring=keyring, new_key_id=aws.other_key_arn, expected_context=CONTEXT
    )
    new_message = rewrapped.header + body
    new_header, new_length = parse_header(io.BytesIO(new_message))
    # Then identity, commitment, context and frames are unchanged; only the wrapped key differs
    assert rewrapped.old_length == old_length and rewrapped.new_length == new_length
    assert new_header.message_id == old_header.message_id
    assert new_header.commitment_key == old_header.commitment_key
    assert new_header.context == old_header.context
    assert new_header.encrypted_data_keys[0].key_arn == aws.other_key_arn == rewrapped.new_key_arn
    assert rewrapped.old_key_arns == (aws.key_arn,)
    # And both ModelShield (strict, key B only) and the official library decrypt the new message
    assert _decrypt(new_message, KmsKeyring(aws.kms, allowed_key_arns=[aws.other_key_arn])) == data
    plaintext, _ = sdk_client().decrypt(source=new_message, key_provider=_kms_provider(aws.other_key_arn))
    assert hashlib.sha256(plaintext).digest() == hashlib.sha256(data).digest()
    # And key A no longer opens it
    with pytest.raises(KeyAccessError):
        _decrypt(new_message, KmsKeyring(aws.kms, allowed_key_arns=[aws.key_arn]))


def test_rewrap_refuses_a_tampered_header_and_an_unexpected_context(aws: Aws) -> None:
    keyring = KmsKeyring(aws.kms)
    message = bytearray(_encrypt(b"x" * 3000, keyring, aws.key_arn))
    _, length = parse_header(io.BytesIO(bytes(message)))
    with pytest.raises(EnvelopeError, match="different value for artifact"):
        rewrap_header(
            bytes(message[:length]),
            keyring=keyring,
            new_key_id=aws.other_key_arn,
            expected_context={"artifact": "other"},
        )
    message[length - 16 - 32 - 2] ^= 0x01  # inside the frame-length field: only the header tag catches it
    with pytest.raises(EnvelopeError, match="header authentication failed"):
        rewrap_header(bytes(message[:length]), keyring=keyring, new_key_id=aws.other_key_arn)
