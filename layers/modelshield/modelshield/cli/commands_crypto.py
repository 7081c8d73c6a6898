"""`modelshield encrypt` and `modelshield decrypt`: the envelope format on local files or s3:// URIs.

KMS and S3 are reached through boto3's defaults, so `AWS_ENDPOINT_URL` points both at the local stack.
Decrypted output is only ever written locally, and only published once the whole message verified.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelshield import wiring
from modelshield.aws import unreachable
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.crypto.envelope import DEFAULT_FRAME_LENGTH
from modelshield.crypto.keyring import KmsKeyring
from modelshield.crypto.s3 import S3Location, encrypt_to_s3, open_object, parse_s3_uri
from modelshield.crypto.streams import Expectation, decrypt_to, encrypt_file
from modelshield.errors import ArtifactNotFound, ModelShieldError, StorageError, UsageError
from modelshield.progress import Progress, ProgressReader, progress_wanted


def parse_context(pairs: Sequence[str]) -> dict[str, str]:
    """`K=V` strings into a context; the first `=` separates, keys must be non-empty and unique."""
    context: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--context expects KEY=VALUE, got {pair!r}")
        if key in context:
            raise UsageError(f"--context gives {key!r} twice")
        context[key] = value
    return context


def _clients() -> tuple[Any, Any]:
    """KMS and S3 clients. Request checksums only when required: we send our own SHA-256 per part."""
    return wiring.client("kms"), wiring.s3_client()


@contextlib.contextmanager
def _cli_errors(action: str) -> Iterator[None]:
    """OS and AWS SDK errors become one-line ModelShieldErrors (exit 2), never tracebacks."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ModelShieldError:
        raise
    except OSError as exc:
        if (down := unreachable(exc)) is not None:  # botocore's connect timeout is an OSError too
            raise down from None
        where = f": {exc.filename}" if exc.filename else ""
        raise StorageError(f"{action} failed: {exc.strerror or exc}{where}") from None
    except (BotoCoreError, ClientError) as exc:
        if (down := unreachable(exc)) is not None:
            raise down from None
        raise StorageError(f"{action} failed: {exc}") from None


def _is_s3(value: str) -> bool:
    return value.startswith("s3://")


def _bar(args: argparse.Namespace) -> bool:
    return progress_wanted(args.quiet)


def _size(value: str) -> int | None:
    """Bytes to expect for the bar (local files; S3 objects show bytes and rate without a total)."""
    if _is_s3(value):
        return None
    try:
        return Path(value).stat().st_size
    except OSError:
        return None


def _name(value: str) -> str:
    return value.rsplit("/", 1)[-1] or value


def _open_local(value: str) -> Any:
    path = Path(value)
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ArtifactNotFound(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"input {path} is a directory, not a file") from None


def _print(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.format == "json":
        print_json(record)
    else:
        print_table(["field", "value"], [(k, v) for k, v in record.items() if k != "context"])


def run_encrypt(args: argparse.Namespace) -> int:
    context = parse_context(args.context)
    if args.frame_size <= 0:
        raise UsageError("--frame-size must be a positive number of bytes")
    with _cli_errors("encrypt"):
        kms, s3 = _clients()
        keyring = KmsKeyring(kms)
        options: dict[str, Any] = {
            "keyring": keyring,
            "key_id": args.key_id,
            "context": context,
            "frame_length": args.frame_size,
            "context_digest_key": args.digest_key,
        }
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(
                Progress(_size(args.input), phase="encrypting", label=_name(args.input), enabled=_bar(args))
            )
            if _is_s3(args.input):
                body: Any = open_object(s3, parse_s3_uri(args.input))
                stack.callback(body.close)
            else:
                body = stack.enter_context(_open_local(args.input))
            source: Any = ProgressReader(body, bar)
            if _is_s3(args.output):
                target: S3Location = parse_s3_uri(args.output)
                if target.version_id:
                    raise UsageError("an output URI cannot name a version; S3 assigns one")
                stored = encrypt_to_s3(source, s3=s3, bucket=target.bucket, key=target.key, **options)
                record = {
                    "output": target.uri,
                    "version_id": stored.version_id,
                    "size": stored.size,
                    "checksum_sha256": stored.checksum,
                    "message_id": stored.message_id,
                    "key_arn": stored.key_arn,
                    "plaintext_sha256": stored.plaintext_sha256,
                    "plaintext_size": stored.plaintext_size,
                }
            else:
                result = encrypt_file(source, Path(args.output), **options)
                record = {
                    "output": args.output,
                    "size": result.ciphertext_size,
                    "message_id": result.message_id,
                    "key_arn": result.key_arn,
                    "plaintext_sha256": result.plaintext_sha256,
                    "plaintext_size": result.plaintext_size,
                    "frames": result.frame_count,
                    "context": result.context,
                }
    _print(args, record)
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    context = parse_context(args.context)
    if _is_s3(args.output):
        raise UsageError("decrypted models are written to local files only; give a local -o path")
    with _cli_errors("decrypt"), contextlib.ExitStack() as stack:
        kms, s3 = _clients()
        keyring = KmsKeyring(kms, allowed_key_arns=args.key_id or None)
        bar = stack.enter_context(
            Progress(_size(args.input), phase="decrypting", label=_name(args.input), enabled=_bar(args))
        )
        if _is_s3(args.input):
            body: Any = open_object(s3, parse_s3_uri(args.input))
            stack.callback(body.close)
        else:
            body = stack.enter_context(_open_local(args.input))
        result = decrypt_to(
            ProgressReader(body, bar),
            Path(args.output),
            expect=Expectation(keyring, context, allow_extra_context=not args.exact_context),
        )
    _print(
        args,
        {
            "output": str(result.path),
            "plaintext_sha256": result.plaintext_sha256,
            "plaintext_size": result.plaintext_size,
            "message_id": result.message_id,
            "key_arn": result.key_arn,
            "frames": result.frame_count,
            "context": result.context,
        },
    )
    return 0


def register(sub: Any) -> None:
    encrypt = sub.add_parser(
        "encrypt",
        help="envelope-encrypt a file (AWS Encryption SDK format, KMS data key)",
        description="Encrypt IN to OUT (local paths or s3:// URIs) under a KMS key. The output is an AWS "
        "Encryption SDK message (v2, suite 0x0478) that the official SDKs can also decrypt.",
    )
    encrypt.add_argument("input", metavar="IN", help="plaintext file or s3://bucket/key[?versionId=...]")
    encrypt.add_argument(
        "-o", "--output", metavar="OUT", required=True, help="ciphertext file or s3://bucket/key"
    )
    encrypt.add_argument("--key-id", required=True, help="KMS key id, ARN or alias that wraps the data key")
    encrypt.add_argument(
        "--context", action="append", default=[], metavar="K=V", help="encryption context entry (repeatable)"
    )
    encrypt.add_argument(
        "--frame-size",
        type=int,
        default=DEFAULT_FRAME_LENGTH,
        metavar="BYTES",
        help="plaintext bytes per frame",
    )
    encrypt.add_argument(
        "--digest-key",
        metavar="KEY",
        help="also record the plaintext sha256 in the context under KEY (the header is then written last)",
    )
    encrypt.add_argument("--quiet", "-q", action="store_true", help="no progress bar on the terminal")
    add_format_flag(encrypt)
    encrypt.set_defaults(handler=run_encrypt)

    decrypt = sub.add_parser(
        "decrypt",
        help="decrypt an envelope-encrypted file; output appears only once fully verified",
        description="Decrypt IN (local path or s3:// URI) to the local file OUT. Every --context entry must "
        "be present in the message with the same value; OUT is written only after the final frame verifies.",
    )
    decrypt.add_argument("input", metavar="IN", help="ciphertext file or s3://bucket/key[?versionId=...]")
    decrypt.add_argument("-o", "--output", metavar="OUT", required=True, help="plaintext file to write")
    decrypt.add_argument(
        "--context", action="append", default=[], metavar="K=V", help="expected encryption context entry"
    )
    decrypt.add_argument(
        "--exact-context", action="store_true", help="also refuse context keys not given with --context"
    )
    decrypt.add_argument(
        "--key-id",
        action="append",
        metavar="ARN",
        help="only use these KMS key ARNs (repeatable; default: any)",
    )
    decrypt.add_argument("--quiet", "-q", action="store_true", help="no progress bar on the terminal")
    add_format_flag(decrypt)
    decrypt.set_defaults(handler=run_decrypt)
