"""`modelshield encrypt` / `modelshield decrypt` against moto: files, s3:// URIs, and clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from modelshield.cli import main

from tests.unit.crypto.envelope_helpers import Aws


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00weights" * 4000)
    return path


def test_encrypt_then_decrypt_local_files(
    aws: Aws, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model file
    sealed, opened = tmp_path / "model.enc", tmp_path / "model.out"
    # When it is encrypted with a context and decrypted with the same context
    code, out, err = _run(
        capsys,
        "encrypt",
        str(model),
        "-o",
        str(sealed),
        "--key-id",
        aws.key_arn,
        "--context",
        "artifact=model",
        "--context",
        "group=research",
        "--frame-size",
        "4096",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    record = json.loads(out)
    code, out, err = _run(
        capsys, "decrypt", str(sealed), "-o", str(opened), "--context", "artifact=model", "--format", "json"
    )
    # Then both succeed, and the output is the original with the digest reported at encryption
    assert (code, err) == (0, "")
    assert opened.read_bytes() == model.read_bytes()
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert record["plaintext_sha256"] == json.loads(out)["plaintext_sha256"] == digest
    assert record["key_arn"] == aws.key_arn
    assert json.loads(out)["context"] == {"artifact": "model", "group": "research"}


def test_encrypt_to_s3_and_decrypt_from_s3(
    aws: Aws, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.s3.create_bucket(Bucket="vault")
    aws.s3.put_bucket_versioning(Bucket="vault", VersioningConfiguration={"Status": "Enabled"})
    code, out, err = _run(
        capsys,
        "encrypt",
        str(model),
        "-o",
        "s3://vault/models/m.enc",
        "--key-id",
        aws.key_arn,
        "--context",
        "artifact=m",
        "--digest-key",
        "sha256",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    version = json.loads(out)["version_id"]
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    code, out, err = _run(
        capsys,
        "decrypt",
        f"s3://vault/models/m.enc?versionId={version}",
        "-o",
        str(tmp_path / "back"),
        "--context",
        f"sha256={digest}",
    )
    assert (code, err) == (0, "")
    assert (tmp_path / "back").read_bytes() == model.read_bytes()
    assert digest in out  # the table output shows the verified digest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["encrypt", "{model}", "-o", "{out}", "--key-id", "{key}", "--context", "novalue"],
            "expects KEY=VALUE",
        ),
        (["encrypt", "{model}", "-o", "{out}", "--key-id", "{key}", "--context", "=v"], "expects KEY=VALUE"),
        (
            [
                "encrypt",
                "{model}",
                "-o",
                "{out}",
                "--key-id",
                "{key}",
                "--context",
                "a=1",
                "--context",
                "a=2",
            ],
            "gives 'a' twice",
        ),
        (["encrypt", "{missing}", "-o", "{out}", "--key-id", "{key}"], "does not exist"),
        (
            ["encrypt", "{model}", "-o", "{out}", "--key-id", "alias/nope"],
            "GenerateDataKey with key alias/nope",
        ),
        (
            ["encrypt", "{model}", "-o", "{out}", "--key-id", "{key}", "--frame-size", "1000"],
            "multiple of 128",
        ),
        (["decrypt", "{missing}", "-o", "{out}"], "does not exist"),
        (["decrypt", "{model}", "-o", "{out}"], "not an AWS Encryption SDK v2 message"),
        (["decrypt", "s3://no-such-bucket/k", "-o", "{out}"], "NoSuchBucket"),
        (["decrypt", "{model}", "-o", "s3://vault/x"], "local files only"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    argv: list[str], message: str, aws: Aws, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {
        "model": str(model),
        "out": str(tmp_path / "out"),
        "key": aws.key_arn,
        "missing": str(tmp_path / "missing.bin"),
    }
    code, _, err = _run(capsys, *(a.format(**values) for a in argv))
    assert code == 2
    assert err.startswith("modelshield: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_tampered_input_and_wrong_context_fail_without_output(
    aws: Aws, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an encrypted model
    sealed = tmp_path / "model.enc"
    assert (
        _run(
            capsys,
            "encrypt",
            str(model),
            "-o",
            str(sealed),
            "--key-id",
            aws.key_arn,
            "--context",
            "artifact=m",
            "--frame-size",
            "1024",
        )[0]
        == 0
    )
    data = bytearray(sealed.read_bytes())
    # When the expected context differs, Then exit 2 and no output
    code, _, err = _run(
        capsys, "decrypt", str(sealed), "-o", str(tmp_path / "o1"), "--context", "artifact=other"
    )
    assert code == 2 and "different value for artifact" in err
    # When a byte near the end is changed, Then exit 2 naming the failed frame, and no output
    data[-30] ^= 0x01
    sealed.write_bytes(bytes(data))
    code, _, err = _run(capsys, "decrypt", str(sealed), "-o", str(tmp_path / "o2"), "--context", "artifact=m")
    assert code == 2 and "failed authentication" in err
    # When the message is cut short, Then exit 2 and truncation is named
    sealed.write_bytes(bytes(data[:-100]))
    code, _, err = _run(capsys, "decrypt", str(sealed), "-o", str(tmp_path / "o3"))
    assert code == 2 and "truncated" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.enc", "model.safetensors"]


def test_decrypt_can_be_restricted_to_named_keys(
    aws: Aws, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed = tmp_path / "model.enc"
    assert _run(capsys, "encrypt", str(model), "-o", str(sealed), "--key-id", aws.key_arn)[0] == 0
    code, _, err = _run(
        capsys, "decrypt", str(sealed), "-o", str(tmp_path / "o"), "--key-id", aws.other_key_arn
    )
    assert code == 2 and "not an allowed key" in err
    code, _, _ = _run(capsys, "decrypt", str(sealed), "-o", str(tmp_path / "o"), "--key-id", aws.key_arn)
    assert code == 0 and (tmp_path / "o").read_bytes() == model.read_bytes()
