"""Helpers shared by the envelope tests (`from tests.unit.crypto.envelope_helpers import ...`)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelshield.crypto.keyring import StaticKeyring
from modelshield.crypto.streams import encrypt_stream

WRAPPING_KEY = bytes(range(100, 132))
PROVIDER_ID = "modelshield-test"
KEY_NAME = "static-key"
CONTEXT = {"artifact": "models/resnet.pt", "version": "v1", "purpose": "test"}


@dataclass
class Aws:
    """moto-backed clients and two KMS keys (see the `aws` fixture)."""

    kms: Any
    s3: Any
    key_arn: str
    other_key_arn: str


def static_keyring() -> StaticKeyring:
    return StaticKeyring(WRAPPING_KEY, provider_id=PROVIDER_ID, key_name=KEY_NAME)


def raw_provider(
    wrapping_key: bytes = WRAPPING_KEY, provider_id: str = PROVIDER_ID, key_name: str = KEY_NAME
) -> Any:
    """The library's raw AES-GCM master key provider holding the same key as `static_keyring()`."""
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    name = provider_id

    class _Provider(RawMasterKeyProvider):
        provider_id = name

        def _get_raw_key(self, key_id: bytes) -> WrappingKey:
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=wrapping_key,
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

    provider = _Provider()
    provider.add_master_key(key_name.encode())
    return provider


def sdk_client() -> Any:
    """The reference library, with its commitment policy at the strictest setting."""
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import CommitmentPolicy

    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def sdk_encrypt(data: bytes, provider: Any, context: Mapping[str, str], frame_length: int) -> bytes:
    """A message written by the reference library with ModelShield's suite."""
    from aws_encryption_sdk.identifiers import Algorithm

    ciphertext, _ = sdk_client().encrypt(
        source=data,
        key_provider=provider,
        encryption_context=dict(context),
        algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        frame_length=frame_length,
    )
    return bytes(ciphertext)


def encrypt_bytes(
    data: bytes,
    keyring: StaticKeyring,
    context: Mapping[str, str] = CONTEXT,
    frame_length: int = 1024,
    **options: Any,
) -> bytes:
    """One message for `data`, built by ModelShield's encryptor."""
    out = io.BytesIO()
    data_key = keyring.generate(KEY_NAME, context)
    encrypt_stream(
        io.BytesIO(data), out, data_key=data_key, context=context, frame_length=frame_length, **options
    )
    return out.getvalue()
