"""Envelope encryption into and out of S3 (moto): verified uploads, aborts, decryption, in-place encryption.

Objects stay small (<= ~12 MiB); a 64 KiB frame length gives multipart uploads of two or three parts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from awscrt.checksums import crc64nvme
from botocore.exceptions import ClientError
from modelshield.crypto.envelope import parse_header, sealed_frame_size
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import (
    MIN_PART_SIZE,
    StoredCiphertext,
    decrypt_s3_to,
    encrypt_in_place,
    encrypt_to_s3,
    open_model,
    parse_s3_uri,
)
from modelshield.crypto.streams import Expectation
from modelshield.errors import ArtifactNotFound, EnvelopeError, IntegrityError, ModelShieldError, UsageError

from tests.builders import moto_account, moto_credentials

FRAME = 64 * 1024
CONTEXT = {"artifact": "models/llm.safetensors", "group": "S3-Production", "purpose": "vault"}
BIG = 11 * 1024 * 1024 + 12345  # two parts: 8 MiB + rest
SMALL = 5000  # one PUT


class Env:
    def __init__(self, s3: Any, kms: Any, key_arn: str) -> None:
        self.s3, self.kms, self.key_arn = s3, kms, key_arn
        self.keyring = KmsKeyring(kms)

    def versions(self, bucket: str, key: str) -> list[str]:
        listing = self.s3.list_object_versions(Bucket=bucket, Prefix=key)
        return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]

    def encrypt(self, source: Any, key: str, *, s3: Any = None, **options: Any) -> StoredCiphertext:
        """`encrypt_to_s3` into s3://vault/`key` with this file's context and frame size."""
        return encrypt_to_s3(
            source,
            s3=s3 or self.s3,
            keyring=self.keyring,
            key_id=self.key_arn,
            bucket="vault",
            key=key,
            context=CONTEXT,
            frame_length=FRAME,
            **options,
        )

    def body(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        return bytes(self.s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    moto_credentials(monkeypatch)
    with moto_account(versioned=("vault", "ingest"), unversioned=("legacy",)) as (s3, kms):
        yield Env(s3, kms, kms.create_key()["KeyMetadata"]["Arn"])


class Faulty:
    """Wraps the S3 client; `hooks` replace individual operations to inject failures."""

    def __init__(self, inner: Any, **hooks: Any) -> None:
        self._inner, self._hooks = inner, hooks

    def __getattr__(self, name: str) -> Any:
        return self._hooks.get(name) or getattr(self._inner, name)


def _crc64nvme_b64(data: bytes) -> str:
    """S3's full-object CRC64NVME of `data`, computed by the CRT directly (not by the code under test)."""
    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


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


def test_a_small_object_is_one_verified_put_that_the_reference_library_decrypts(env: Env) -> None:
    # Given a small model
    data = os.urandom(SMALL)
    # When it is encrypted into the vault
    stored = env.encrypt(
        io.BytesIO(data),
        "m/small.enc",
        tags={"modelshield:state": "ENCRYPTED"},
        metadata={"message-id": "x"},
    )
    # Then one PUT holds it, S3's CRC64NVME is the object's, and the result names the version
    body = env.body("vault", "m/small.enc", stored.version_id)
    assert stored.part_sizes == (len(body),) == (stored.size,)
    assert stored.checksum == _crc64nvme_b64(body)
    assert env.versions("vault", "m/small.enc") == [stored.version_id]
    assert stored.key_arn == env.key_arn and stored.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    tags = env.s3.get_object_tagging(Bucket="vault", Key="m/small.enc")["TagSet"]
    assert tags == [{"Key": "modelshield:state", "Value": "ENCRYPTED"}]
    assert env.s3.head_object(Bucket="vault", Key="m/small.enc")["Metadata"] == {"message-id": "x"}
    # And the official library decrypts the stored object
    assert _sdk_decrypt(body, env.key_arn) == (data, CONTEXT)


def test_a_large_object_is_a_multipart_upload_of_whole_frames_verified_by_a_full_object_checksum(
    env: Env, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    stored = env.encrypt(
        source,
        "m/big.enc",
    )
    body = env.body("vault", "m/big.enc", stored.version_id)
    # Then: parts >= 5 MiB except the last; part 1 is header + whole frames, the others whole frames
    assert len(stored.part_sizes) == 2 and stored.part_sizes[0] >= MIN_PART_SIZE
    sealed = sealed_frame_size(FRAME, False)
    assert (stored.part_sizes[0] - stored.header_length) % sealed == 0
    # And the checksum S3 reports is the CRC64NVME of the whole object (FULL_OBJECT, not a composite of
    # the parts), and each part was sent with its own
    head = env.s3.head_object(
        Bucket="vault", Key="m/big.enc", VersionId=stored.version_id, ChecksumMode="ENABLED"
    )
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert stored.checksum == head["ChecksumCRC64NVME"] == _crc64nvme_b64(body)
    first = body[: stored.part_sizes[0]]
    second = body[stored.part_sizes[0] :]
    assert stored.part_checksums == (_crc64nvme_b64(first), _crc64nvme_b64(second))
    # And it decrypts back to the plaintext, whose digest decrypt_s3_to returns
    out = tmp_path / "back.bin"
    digest = decrypt_s3_to(
        "vault", "m/big.enc", stored.version_id, out, s3=env.s3, expect=Expectation(env.keyring, CONTEXT)
    )
    assert digest == hashlib.sha256(data).hexdigest() and out.read_bytes() == data


def test_a_part_damaged_in_transit_is_refused_by_its_checksum_and_the_upload_aborted(env: Env) -> None:
    # Given a network that flips one byte of part 2 after ModelShield computed the part's checksum, and
    # S3's answer to a part whose bytes do not match the x-amz-checksum-crc64nvme it came with (AWS
    # checks it; moto 5.2.5 does not, so the injector gives S3's answer: BadDigest)
    sent: dict[int, bool] = {}  # part number -> its checksum matched the bytes ModelShield handed over

    def upload_part(**kwargs: Any) -> Any:
        sent[kwargs["PartNumber"]] = _crc64nvme_b64(kwargs["Body"]) == kwargs["ChecksumCRC64NVME"]
        if kwargs["PartNumber"] == 2:
            body = bytearray(kwargs["Body"])
            body[100] ^= 0xFF
            kwargs["Body"] = bytes(body)
        if _crc64nvme_b64(kwargs["Body"]) != kwargs["ChecksumCRC64NVME"]:
            error = {
                "Code": "BadDigest",
                "Message": "The CRC64NVME you specified did not match the calculated checksum.",
            }
            raise ClientError({"Error": error}, "UploadPart")
        return env.s3.upload_part(**kwargs)

    # When a large object is uploaded through it
    with pytest.raises(ModelShieldError, match="UploadPart 2 failed: BadDigest"):
        env.encrypt(
            io.BytesIO(os.urandom(BIG)),
            "m/corrupt.enc",
            s3=Faulty(env.s3, upload_part=upload_part),
        )
    # Then each part went out with the checksum of its intended bytes, the upload was aborted, and no
    # version exists
    assert sent.get(2) is True and all(sent.values())
    assert env.s3.list_multipart_uploads(Bucket="vault").get("Uploads", []) == []
    assert env.versions("vault", "m/corrupt.enc") == []


def test_completion_names_the_whole_objects_checksum_so_s3_checks_the_assembly(env: Env) -> None:
    # Given a client that records what CompleteMultipartUpload asks S3 to check
    completed: list[dict[str, Any]] = []

    def complete_multipart_upload(**kwargs: Any) -> Any:
        completed.append(kwargs)
        return env.s3.complete_multipart_upload(**kwargs)

    # When a large object is uploaded
    stored = env.encrypt(
        io.BytesIO(os.urandom(BIG)),
        "m/assembled.enc",
        s3=Faulty(env.s3, complete_multipart_upload=complete_multipart_upload),
    )
    # Then the request names the FULL_OBJECT CRC64NVME of exactly the bytes stored, and every part's
    (request,) = completed
    body = env.body("vault", "m/assembled.enc", stored.version_id)
    assert request["ChecksumType"] == "FULL_OBJECT"
    assert request["ChecksumCRC64NVME"] == _crc64nvme_b64(body)
    assert [p["ChecksumCRC64NVME"] for p in request["MultipartUpload"]["Parts"]] == list(
        stored.part_checksums
    )


def test_a_failed_part_aborts_the_multipart_upload(env: Env) -> None:
    def upload_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "try later"}}, "UploadPart")
        return env.s3.upload_part(**kwargs)

    with pytest.raises(ModelShieldError, match="UploadPart 2 failed: SlowDown"):
        env.encrypt(
            io.BytesIO(os.urandom(BIG)),
            "m/fail.enc",
            s3=Faulty(env.s3, upload_part=upload_part),
        )
    assert env.s3.list_multipart_uploads(Bucket="vault").get("Uploads", []) == []
    assert env.versions("vault", "m/fail.enc") == []


def test_an_object_without_a_reported_checksum_is_not_trusted(env: Env) -> None:
    def head_object(**kwargs: Any) -> Any:
        response = dict(env.s3.head_object(**kwargs))
        response.pop("ChecksumCRC64NVME", None)
        return response

    with pytest.raises(IntegrityError, match="reports CRC64NVME None"):
        env.encrypt(
            io.BytesIO(b"x" * SMALL),
            "m/nock.enc",
            s3=Faulty(env.s3, head_object=head_object),
        )
    assert env.versions("vault", "m/nock.enc") == []


def test_a_plaintext_that_changed_since_it_was_hashed_is_not_stored(env: Env) -> None:
    with pytest.raises(IntegrityError, match="changed since hashing"):
        env.encrypt(
            io.BytesIO(os.urandom(BIG)),
            "m/changed.enc",
            plaintext_sha256="00" * 32,
        )
    assert env.s3.list_multipart_uploads(Bucket="vault").get("Uploads", []) == []
    assert env.versions("vault", "m/changed.enc") == []


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_header_after_body_on_s3_records_the_digest_and_decrypts_with_the_library(
    env: Env, size: int
) -> None:
    # Given a plaintext whose digest is computed while it is encrypted
    data = os.urandom(size)
    # When the body goes first and part 1 (header + first frames) is sent last
    stored = env.encrypt(
        io.BytesIO(data),
        "m/late-header.enc",
        context_digest_key="sha256",
    )
    # Then the stored message carries the digest in its context and the official library reads it
    digest = hashlib.sha256(data).hexdigest()
    body = env.body("vault", "m/late-header.enc", stored.version_id)
    header, _ = parse_header(io.BytesIO(body))
    assert header.context["sha256"] == digest == stored.plaintext_sha256
    assert _sdk_decrypt(body, env.key_arn) == (data, {**CONTEXT, "sha256": digest})


def test_decrypting_with_the_wrong_context_publishes_nothing(env: Env, tmp_path: Path) -> None:
    stored = env.encrypt(
        io.BytesIO(b"m" * SMALL),
        "m/ctx.enc",
    )
    with pytest.raises(EnvelopeError, match="different value for group"):
        decrypt_s3_to(
            "vault",
            "m/ctx.enc",
            stored.version_id,
            tmp_path / "m",
            s3=env.s3,
            expect=Expectation(env.keyring, {**CONTEXT, "group": "HuggingFace-Research"}),
        )
    assert list(tmp_path.iterdir()) == []


def test_open_model_reads_s3_uris_with_versions_and_reports_missing_objects(env: Env, tmp_path: Path) -> None:
    data = b"gguf" * 1000
    first = env.encrypt(
        io.BytesIO(data),
        "m/v.enc",
    )
    env.encrypt(
        io.BytesIO(b"newer"),
        "m/v.enc",
    )
    result = open_model(
        f"s3://vault/m/v.enc?versionId={first.version_id}",
        tmp_path / "m",
        s3=env.s3,
        expect=Expectation(env.keyring, CONTEXT),
    )
    assert (tmp_path / "m").read_bytes() == data and result.plaintext_size == len(data)
    with pytest.raises(ArtifactNotFound, match="NoSuchKey"):
        open_model(
            "s3://vault/m/absent.enc", tmp_path / "x", s3=env.s3, expect=Expectation(env.keyring, None)
        )
    assert parse_s3_uri("s3://b/a/b?c.bin").key == "a/b?c.bin"  # only ?versionId= is special


def test_in_place_encryption_deletes_the_plaintext_version_only_after_verifying(
    env: Env, tmp_path: Path
) -> None:
    # Given a plaintext model uploaded to a versioned ingest bucket
    data = os.urandom(BIG)
    plain_version = env.s3.put_object(Bucket="ingest", Key="team/model.bin", Body=data)["VersionId"]
    # When it is encrypted in place
    stored = encrypt_in_place(
        env.s3,
        "ingest",
        "team/model.bin",
        plain_version,
        keyring=env.keyring,
        key_id=env.key_arn,
        context=CONTEXT,
        frame_length=FRAME,
    )
    # Then only the encrypted version remains, and it decrypts to the original
    assert env.versions("ingest", "team/model.bin") == [stored.version_id] != [plain_version]
    out = tmp_path / "model.bin"
    decrypt_s3_to("ingest", "team/model.bin", None, out, s3=env.s3, expect=Expectation(env.keyring, CONTEXT))
    assert out.read_bytes() == data
    # And running it again refuses: the object is already an envelope
    with pytest.raises(UsageError, match="already envelope-encrypted"):
        encrypt_in_place(
            env.s3,
            "ingest",
            "team/model.bin",
            stored.version_id,
            keyring=env.keyring,
            key_id=env.key_arn,
            context=CONTEXT,
            frame_length=FRAME,
        )


def test_in_place_encryption_keeps_the_plaintext_when_verification_fails(env: Env) -> None:
    plain_version = env.s3.put_object(Bucket="ingest", Key="m.bin", Body=b"p" * SMALL)["VersionId"]

    def head_object(**kwargs: Any) -> Any:
        response = dict(env.s3.head_object(**kwargs))
        if kwargs.get("ChecksumMode"):
            response["ChecksumCRC64NVME"] = _crc64nvme_b64(b"something else")
        return response

    with pytest.raises(IntegrityError):
        encrypt_in_place(
            Faulty(env.s3, head_object=head_object),
            "ingest",
            "m.bin",
            plain_version,
            keyring=env.keyring,
            key_id=env.key_arn,
            context=CONTEXT,
            frame_length=FRAME,
        )
    assert env.versions("ingest", "m.bin") == [plain_version]
    assert env.body("ingest", "m.bin") == b"p" * SMALL


def test_in_place_encryption_refuses_a_version_that_is_no_longer_current(env: Env) -> None:
    old = env.s3.put_object(Bucket="ingest", Key="m.bin", Body=b"old")["VersionId"]
    new = env.s3.put_object(Bucket="ingest", Key="m.bin", Body=b"new")["VersionId"]
    with pytest.raises(IntegrityError, match="no longer the current version"):
        encrypt_in_place(
            env.s3,
            "ingest",
            "m.bin",
            old,
            keyring=env.keyring,
            key_id=env.key_arn,
            context=CONTEXT,
            frame_length=FRAME,
        )
    assert sorted(env.versions("ingest", "m.bin")) == sorted([old, new])


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_in_place_encryption_in_an_unversioned_bucket_goes_through_a_verified_staging_copy(
    env: Env, size: int, tmp_path: Path
) -> None:
    data = os.urandom(size)
    env.s3.put_object(Bucket="legacy", Key="old/model.bin", Body=data)
    stored = encrypt_in_place(
        env.s3,
        "legacy",
        "old/model.bin",
        None,
        keyring=env.keyring,
        key_id=env.key_arn,
        context=CONTEXT,
        frame_length=FRAME,
    )
    keys = [o["Key"] for o in env.s3.list_objects_v2(Bucket="legacy")["Contents"]]
    assert keys == ["old/model.bin"]  # the staging object is gone
    assert stored.key == "old/model.bin" and stored.version_id is None
    digest = decrypt_s3_to(
        "legacy", "old/model.bin", None, tmp_path / "m", s3=env.s3, expect=Expectation(env.keyring, CONTEXT)
    )
    assert digest == hashlib.sha256(data).hexdigest()
