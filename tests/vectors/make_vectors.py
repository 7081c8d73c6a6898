"""Generate known-answer vectors with the official aws-encryption-sdk and a raw (static) AES key.

Run: .venv/bin/python tests/vectors/make_vectors.py   (rewrites tests/vectors/esdk_v2_0478_raw_aes.json)

Each vector is a message written by the reference library (suite 0x0478, framed) under a wrapping key
that is part of the vector, so ModelShield's format code can be checked against it without KMS. The
wrapping key is a published test key: it protects nothing. Messages are random per run (message id,
data key, IVs of the wrapped key), so regenerating changes the ciphertexts but not what they prove.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

OUTPUT = Path(__file__).with_name("esdk_v2_0478_raw_aes.json")
WRAPPING_KEY = bytes(range(32))  # test key, published here on purpose
PROVIDER_ID = "modelshield-kat"
KEY_NAME = "static-aes-256"


class _StaticProvider(RawMasterKeyProvider):  # the library's documented way to plug in a raw key
    provider_id = PROVIDER_ID

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=WRAPPING_KEY,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def _plaintext(size: int, seed: str) -> bytes:
    """Deterministic bytes, so the vector file documents its own inputs."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


CASES: list[dict[str, Any]] = [
    {"name": "empty", "size": 0, "frame_length": 1024, "context": {"purpose": "kat"}},
    {"name": "one-byte", "size": 1, "frame_length": 1024, "context": {"purpose": "kat"}},
    {"name": "under-one-frame", "size": 1023, "frame_length": 1024, "context": {"purpose": "kat"}},
    {"name": "exactly-one-frame", "size": 1024, "frame_length": 1024, "context": {"purpose": "kat"}},
    {"name": "frames-plus-remainder", "size": 3000, "frame_length": 1024, "context": {"artifact": "m/1"}},
    {"name": "exact-multiple", "size": 4096, "frame_length": 1024, "context": {"artifact": "m/2"}},
    {"name": "empty-context", "size": 2000, "frame_length": 1024, "context": {}},
    {
        "name": "sorted-unicode-context",
        "size": 700,
        "frame_length": 256,
        "context": {"b": "2", "a": "1", "B": "upper", "aa": "", "modèle": "ñandú 🦙"},
    },
    {"name": "sdk-default-frame", "size": 10000, "frame_length": 4096, "context": {"purpose": "kat"}},
    {"name": "smallest-frames", "size": 500, "frame_length": 128, "context": {"purpose": "kat"}},
]


def main() -> None:
    provider = _StaticProvider()
    provider.add_master_key(KEY_NAME.encode())
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    vectors = []
    for case in CASES:
        plaintext = _plaintext(case["size"], case["name"])
        ciphertext, _ = client.encrypt(
            source=plaintext,
            key_provider=provider,
            encryption_context=case["context"],
            algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            frame_length=case["frame_length"],
        )
        vectors.append(
            {
                "name": case["name"],
                "frame_length": case["frame_length"],
                "encryption_context": case["context"],
                "plaintext_hex": plaintext.hex(),
                "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
                "ciphertext_hex": ciphertext.hex(),
            }
        )
    document = {
        "description": "AWS Encryption SDK messages: format v2, suite 0x0478, framed, raw AES-GCM wrapping",
        "generator": "tests/vectors/make_vectors.py",
        "aws_encryption_sdk_version": aws_encryption_sdk.__version__,
        "wrapping_key_hex": WRAPPING_KEY.hex(),
        "provider_id": PROVIDER_ID,
        "key_name": KEY_NAME,
        "vectors": vectors,
    }
    OUTPUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUTPUT}")


if __name__ == "__main__":
    main()
