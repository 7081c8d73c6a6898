"""Gathering metadata for S3 objects under moto: user metadata, tags, model cards, signatures, principals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from modelshield.policy.gather import gather_metadata, hf_repo_from_key
from modelshield.policy.groups import Source
from modelshield.s3_metadata import S3Object
from moto import mock_aws

from tests.builders import moto_credentials

BUCKET = "ingest"
HF = Source(type="huggingface", bucket=BUCKET, prefix="huggingface/")
PROD = Source(type="s3", bucket=BUCKET, prefix="production/")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def gather(
    s3: Any, key: str, source: Source | None, tmp_path: Path, principal: str | None = None, version=None
):
    return gather_metadata(
        S3Object(s3, BUCKET, key, version, workdir=tmp_path),
        key,
        source,
        event_principal=principal,
        artifact_path=tmp_path / "a",
    )


def test_huggingface_source_reads_the_model_card_and_the_repo_from_the_key(s3: Any, tmp_path: Path) -> None:
    # Given an HF mirror layout with a model card next to the weights
    key = "huggingface/google/gemma-2b/model.safetensors"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"weights", Tagging="team=nlp")
    card = b"---\nlicense: gemma\nbase_model: google/gemma-2b-base\n---\n# Gemma\n"
    s3.put_object(Bucket=BUCKET, Key="huggingface/google/gemma-2b/README.md", Body=card)
    # When metadata is gathered
    metadata = gather(s3, key, HF, tmp_path, principal="AWS:AIDAUPLOADER")
    # Then the card, the key layout and the tags are used; the S3 uploader is not (not an s3 source)
    assert metadata.source_type == "huggingface"
    assert (metadata.license, metadata.base_model) == ("gemma", "google/gemma-2b-base")
    assert (metadata.hf_repo, metadata.hf_org) == ("google/gemma-2b", "google")
    assert metadata.tags == {"team": "nlp"}
    assert metadata.uploader_principal is None
    assert metadata.signature_path is None and metadata.artifact_path == str(tmp_path / "a")


def test_user_metadata_takes_precedence_over_the_card_and_the_key(s3: Any, tmp_path: Path) -> None:
    key = "huggingface/someone/mirror/model.bin"
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=b"w",
        Metadata={
            "license": "mit",
            "hf-repo": "meta-llama/Llama-3",
            "hf-revision": "abc123",
            "author": "Meta",
        },
    )
    s3.put_object(
        Bucket=BUCKET, Key="huggingface/someone/mirror/README.md", Body=b"---\nlicense: gpl-3.0\n---\n"
    )
    metadata = gather(s3, key, HF, tmp_path)
    assert (metadata.license, metadata.hf_repo, metadata.hf_revision, metadata.author) == (
        "mit",
        "meta-llama/Llama-3",
        "abc123",
        "Meta",
    )
    assert metadata.user_metadata["license"] == "mit"


def test_s3_source_records_the_event_principal_and_ignores_model_cards(s3: Any, tmp_path: Path) -> None:
    key = "production/resnet/model.onnx"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"onnx")
    s3.put_object(Bucket=BUCKET, Key="production/resnet/README.md", Body=b"---\nlicense: mit\n---\n")
    metadata = gather(s3, key, PROD, tmp_path, principal="AWS:AROAEXAMPLE:alice")
    assert metadata.source_type == "s3"
    assert metadata.uploader_principal == "AWS:AROAEXAMPLE:alice"
    assert metadata.license is None and metadata.hf_repo is None


def test_an_object_under_no_source_is_treated_as_s3(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="loose.bin", Body=b"x")
    metadata = gather(s3, "loose.bin", None, tmp_path, principal="AWS:P")
    assert (metadata.source_type, metadata.uploader_principal) == ("s3", "AWS:P")


def test_a_detached_signature_is_downloaded_preferring_key_dot_sig(s3: Any, tmp_path: Path) -> None:
    key = "production/resnet/model.onnx"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"onnx")
    s3.put_object(Bucket=BUCKET, Key="production/resnet/model.sig", Body=b"directory signature")
    # With only model.sig, it is used as a directory signature for this member
    shared = gather(s3, key, PROD, tmp_path)
    assert Path(shared.signature_path).read_bytes() == b"directory signature"
    assert shared.signature_member == "model.onnx"
    # With <key>.sig as well, that one wins
    s3.put_object(Bucket=BUCKET, Key=key + ".sig", Body=b"file signature")
    direct = gather(s3, key, PROD, tmp_path)
    assert Path(direct.signature_path).read_bytes() == b"file signature"
    assert direct.signature_member is None


def test_the_requested_version_is_read_not_the_latest(s3: Any, tmp_path: Path) -> None:
    key = "production/m.onnx"
    first = s3.put_object(Bucket=BUCKET, Key=key, Body=b"1", Metadata={"license": "mit"})["VersionId"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"2", Metadata={"license": "gpl-3.0"})
    assert gather(s3, key, PROD, tmp_path, version=first).license == "mit"


def test_a_missing_object_raises_rather_than_gathering_nothing(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(ClientError):
        gather(s3, "production/gone.onnx", PROD, tmp_path)


def test_s3_errors_other_than_not_found_on_siblings_raise(s3: Any, tmp_path: Path) -> None:
    key = "huggingface/google/gemma/model.bin"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"w")

    class Denying:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def get_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    with pytest.raises(ClientError, match="AccessDenied"):
        gather(Denying(s3), key, HF, tmp_path)


@pytest.mark.parametrize(
    ("key", "repo"),
    [
        ("huggingface/google/gemma/model.bin", "google/gemma"),
        ("huggingface/google/gemma/sub/dir/model.bin", "google/gemma"),
        ("huggingface/model.bin", None),
        ("huggingface/google/model.bin", None),
        ("other/google/gemma/model.bin", None),
    ],
)
def test_repo_id_from_key_layout(key: str, repo: str | None) -> None:
    assert hf_repo_from_key(key, "huggingface/") == repo
