"""Range-parallel encryption of S3 objects (moto): the result is one verified message the library decrypts.

Objects stay small (~16 MiB, 5 MiB ranges of 64 KiB frames: four parts) so moto keeps up; the
multi-GB figures are in benchmarks/ranges_bench.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from awscrt.checksums import crc64nvme
from modelshield.crypto.envelope import parse_header
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import MIN_PART_SIZE, S3Location
from modelshield.crypto.s3_ranges import encrypt_object_by_range, verify_object_by_range
from modelshield.errors import EnvelopeError, IntegrityError
from modelshield.ranged import RangedObject

from tests.builders import moto_account, moto_credentials

FRAME = 64 * 1024
RANGE = MIN_PART_SIZE  # 5 MiB, 80 frames
SIZE = 3 * RANGE + 777_777
CONTEXT = {"artifact": "ingest/models/big.gguf", "group": "S3-Production", "purpose": "model-artifact"}
DIGEST_KEY = "sha256"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, str]]:
    moto_credentials(monkeypatch)
    with moto_account(versioned=("ingest", "vault")) as (s3, kms):
        yield s3, kms, kms.create_key()["KeyMetadata"]["Arn"]


def _upload(s3: Any, data: bytes) -> RangedObject:
    put = s3.put_object(Bucket="ingest", Key="models/big.gguf", Body=data)
    return RangedObject(
        s3, "ingest", "models/big.gguf", size=len(data), version_id=put["VersionId"], etag=put["ETag"]
    )


def _encrypt(s3: Any, kms: Any, key_arn: str, source: RangedObject, **overrides: Any) -> Any:
    """Header after body into vault/models/big.gguf on three workers, unless `overrides` say otherwise."""
    options: dict[str, Any] = {
        "bucket": "vault",
        "key": "models/big.gguf",
        "context": CONTEXT,
        "digest_key": DIGEST_KEY,
        "frame_length": FRAME,
        "range_size": RANGE,
        "workers": 3,
    }
    return encrypt_object_by_range(
        source, s3=s3, keyring=KmsKeyring(kms), key_id=key_arn, **{**options, **overrides}
    )


def _sdk_decrypt(message: bytes, key_arn: str) -> tuple[bytes, dict[str, str]]:
    import aws_encryption_sdk
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider
    from aws_encryption_sdk.identifiers import CommitmentPolicy

    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    plaintext, header = client.decrypt(
        source=message, key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    )
    return plaintext, dict(header.encryption_context)


def test_an_object_encrypted_by_parallel_ranges_is_one_message_the_reference_library_decrypts(
    aws: tuple[Any, Any, str],
) -> None:
    s3, kms, key_arn = aws
    # Given a 16 MiB plaintext object in the ingest bucket
    data = os.urandom(SIZE)
    source = _upload(s3, data)
    # When it is encrypted into the vault by 5 MiB ranges on three workers
    stored = _encrypt(s3, kms, key_arn, source)
    # Then the vault object is a four-part multipart upload verified by its full-object checksum (the
    # parts, sent out of order by three workers, combine into the CRC64NVME of the whole message)
    assert len(stored.part_sizes) == 4
    assert stored.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    # and the official library decrypts it to the original bytes, with the digest in the context
    message = s3.get_object(Bucket="vault", Key="models/big.gguf", VersionId=stored.version_id)["Body"].read()
    assert stored.checksum == base64.b64encode(crc64nvme(message).to_bytes(8, "big")).decode()
    plaintext, context = _sdk_decrypt(message, key_arn)
    assert plaintext == data
    assert context[DIGEST_KEY] == hashlib.sha256(data).hexdigest()
    assert {k: context[k] for k in CONTEXT} == CONTEXT
    # and only the ranges were read from the source, once each
    assert source.bytes_fetched == SIZE


def test_parallel_verification_authenticates_every_range_and_names_a_flipped_byte(
    aws: tuple[Any, Any, str],
) -> None:
    s3, kms, key_arn = aws
    # Given a range-encrypted vault object
    data = os.urandom(SIZE)
    stored = _encrypt(s3, kms, key_arn, _upload(s3, data))
    location = S3Location("vault", "models/big.gguf", stored.version_id)
    keyring = KmsKeyring(kms)
    # When it is verified by parallel ranged reads
    digest = verify_object_by_range(
        s3, location, keyring=keyring, expected_context=CONTEXT, digest_key=DIGEST_KEY, range_size=RANGE
    )
    # Then every frame authenticates and the digest is the plaintext's
    assert digest == hashlib.sha256(data).hexdigest()
    # When one byte in the third range is flipped (a new version of the vault object)
    message = bytearray(s3.get_object(Bucket="vault", Key="models/big.gguf")["Body"].read())
    _, offset = parse_header(__import__("io").BytesIO(bytes(message)))
    message[offset + 2 * (RANGE // FRAME) * (FRAME + 32) + 100] ^= 1
    tampered = s3.put_object(Bucket="vault", Key="models/big.gguf", Body=bytes(message))
    # Then verification fails, naming the frame
    with pytest.raises(EnvelopeError, match="frame 161 failed authentication"):
        verify_object_by_range(
            s3,
            S3Location("vault", "models/big.gguf", tampered["VersionId"]),
            keyring=keyring,
            expected_context=CONTEXT,
            range_size=RANGE,
        )


def test_a_source_that_changes_during_encryption_stores_nothing(aws: tuple[Any, Any, str]) -> None:
    s3, kms, key_arn = aws
    # Given a source pinned to its ETag, then overwritten (unversioned reads would splice two objects)
    data = os.urandom(SIZE)
    source = _upload(s3, data)
    source.version_id = None
    s3.put_object(Bucket="ingest", Key="models/big.gguf", Body=os.urandom(SIZE))
    # When it is encrypted by range
    # Then the ETag precondition fails the read, the multipart upload is aborted and nothing is stored
    with pytest.raises(Exception, match=r"PreconditionFailed|412"):
        _encrypt(s3, kms, key_arn, source)
    assert "Contents" not in s3.list_objects_v2(Bucket="vault")
    assert not s3.list_multipart_uploads(Bucket="vault").get("Uploads")


def test_a_digest_that_differs_from_the_expected_one_stores_nothing(aws: tuple[Any, Any, str]) -> None:
    s3, kms, key_arn = aws
    # Given an object whose expected digest (recorded earlier) is not its content's
    source = _upload(s3, os.urandom(SIZE))
    # When it is encrypted with that expectation
    # Then nothing is stored
    with pytest.raises(IntegrityError, match="not the expected"):
        _encrypt(s3, kms, key_arn, source, plaintext_sha256="0" * 64)
    assert "Contents" not in s3.list_objects_v2(Bucket="vault")


def test_header_first_range_encryption_uses_a_generated_data_key_and_checks_the_digest(
    aws: tuple[Any, Any, str],
) -> None:
    s3, kms, key_arn = aws
    # Given an object whose digest the caller computed (it is part of the context already)
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    context = {**CONTEXT, DIGEST_KEY: digest}
    source = _upload(s3, data)
    # When it is encrypted by range with the header first (GenerateDataKey, no kms:Encrypt needed)
    stored = _encrypt(
        s3, kms, key_arn, source, context=context, digest_key=None, workers=2, plaintext_sha256=digest
    )
    # Then the library decrypts it with exactly that context
    message = s3.get_object(Bucket="vault", Key="models/big.gguf", VersionId=stored.version_id)["Body"].read()
    assert _sdk_decrypt(message, key_arn) == (data, context)
    # and a wrong expected digest stores nothing new
    with pytest.raises(IntegrityError):
        _encrypt(
            s3,
            kms,
            key_arn,
            source,
            key="other",
            context={**CONTEXT, DIGEST_KEY: "0" * 64},
            digest_key=None,
            plaintext_sha256="0" * 64,
        )
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="vault")["Contents"]] == ["models/big.gguf"]


def test_the_parallel_digest_is_the_objects_sha256(aws: tuple[Any, Any, str]) -> None:
    from modelshield.large_objects import parallel_sha256

    s3, _, _ = aws
    data = os.urandom(SIZE)
    assert parallel_sha256(_upload(s3, data), workers=3, chunk=RANGE) == hashlib.sha256(data).hexdigest()
