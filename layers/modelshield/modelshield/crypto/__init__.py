"""Envelope encryption: the AWS Encryption SDK message format (v2, suite 0x0478) on `cryptography`.

`envelope` is the wire format, `keyring` the data keys (KMS), `streams` flat-memory encryption and
staged decryption, `s3` verified uploads, downloads and in-place encryption.
"""

from __future__ import annotations

from modelshield.crypto.envelope import (
    DEFAULT_FRAME_LENGTH,
    DEFAULT_LIMITS,
    AlgorithmSuite,
    EncryptedDataKey,
    Header,
    ReadLimits,
    check_context,
    parse_header,
)
from modelshield.crypto.keyring import (
    DataKey,
    Keyring,
    KmsKeyring,
    RewrappedHeader,
    StaticKeyring,
    rewrap_header,
)
from modelshield.crypto.s3 import (
    S3Location,
    StoredCiphertext,
    decrypt_s3_to,
    encrypt_in_place,
    encrypt_to_s3,
    open_model,
    parse_s3_uri,
)
from modelshield.crypto.streams import (
    DecryptResult,
    EncryptResult,
    Expectation,
    PendingHeader,
    decrypt_file,
    decrypt_stream,
    decrypt_to,
    encrypt_body_first,
    encrypt_file,
    encrypt_stream,
)

__all__ = [
    "DEFAULT_FRAME_LENGTH",
    "DEFAULT_LIMITS",
    "AlgorithmSuite",
    "DataKey",
    "DecryptResult",
    "EncryptResult",
    "EncryptedDataKey",
    "Expectation",
    "Header",
    "Keyring",
    "KmsKeyring",
    "PendingHeader",
    "ReadLimits",
    "RewrappedHeader",
    "S3Location",
    "StaticKeyring",
    "StoredCiphertext",
    "check_context",
    "decrypt_file",
    "decrypt_s3_to",
    "decrypt_stream",
    "decrypt_to",
    "encrypt_body_first",
    "encrypt_file",
    "encrypt_in_place",
    "encrypt_stream",
    "encrypt_to_s3",
    "open_model",
    "parse_header",
    "parse_s3_uri",
    "rewrap_header",
]
