"""Verify detached OpenSSF model signatures (the `model-signing` package, key-based, offline).

A signature is a Sigstore bundle whose DSSE payload is a manifest: (path, sha256) for every file
of the signed model. `model_signing` signs either one file (manifest entry ".") or a directory
(one entry per relative path, e.g. a `model.sig` next to `model.safetensors`). We verify the bundle
against each trusted key, then check that the artifact's sha256 -- already computed by the scan, so
large artifacts are not read twice -- is the digest the manifest records for it.

`model_signing` is imported lazily: when it (or its undeclared dependency pyopenssl) is missing,
verification reports `available=False` and the rule turns that into ERROR, never into PASS.
It reaches into `model_signing._signing` for the manifest of a directory signature; that module is
private, so the package is pinned (1.1.1) and a test covers both file and directory signatures.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SIGNATURE_BYTES = 16 * 1024 * 1024  # a bundle for 100k files is a few MB


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one artifact's detached signature."""

    valid: bool
    message: str
    available: bool = True  # False: the verification library could not be imported
    key: str | None = None  # which trusted key (its label) verified it


def _library() -> tuple[Any, Any]:
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    return sign_ec_key, sign_sigstore_pb


def _key_file(key: str, workdir: Path, index: int) -> tuple[Path, str]:
    """A trusted key as a file path (model_signing reads keys from files) and a label for messages."""
    if "-----BEGIN" in key:
        path = workdir / f"trusted-{index}.pem"
        path.write_text(key.strip() + "\n", encoding="ascii")
        return path, f"trusted_public_keys[{index}]"
    return Path(key).expanduser(), key


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_signature(
    artifact_path: str | Path,
    signature_path: str | Path,
    trusted_public_keys: list[str],
    *,
    sha256: str | None = None,
    member: str | None = None,
) -> SignatureCheck:
    """Whether `signature_path` is a trusted key's signature over the artifact's bytes.

    `member` is the artifact's path inside a directory signature; without it, any manifest entry with
    the artifact's digest counts (the bytes are what the publisher signed, whatever their name).
    Never raises: every failure is a SignatureCheck with a message.
    """
    try:
        sign_ec_key, sign_sigstore_pb = _library()
    except Exception as exc:  # ImportError, or pyopenssl missing beside model_signing
        return SignatureCheck(
            False,
            f"signature cannot be verified: model-signing is not importable ({type(exc).__name__}: {exc})",
            available=False,
        )
    signature = Path(signature_path)
    try:
        size = signature.stat().st_size
    except OSError as exc:
        return SignatureCheck(False, f"signature {signature.name} cannot be read: {exc}")
    if size > MAX_SIGNATURE_BYTES:
        return SignatureCheck(
            False, f"signature {signature.name} is {size} bytes, over {MAX_SIGNATURE_BYTES}"
        )
    try:
        bundle = sign_sigstore_pb.Signature.read(signature)
    except Exception as exc:
        return SignatureCheck(False, f"signature {signature.name} is not a model-signing bundle ({exc})")

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelshield-keys-") as tmp:
        for index, key in enumerate(trusted_public_keys):
            key_path, label = _key_file(key, Path(tmp), index)
            try:
                manifest = sign_ec_key.Verifier(key_path).verify(bundle)
            except Exception as exc:
                problems.append(f"{label}: {exc}")
                continue
            return _match_manifest(manifest, Path(artifact_path), sha256, member, label)
    detail = "; ".join(problems) if problems else "no trusted keys configured"
    return SignatureCheck(False, f"signature {signature.name} is not from a trusted key ({detail})"[:1000])


def _match_manifest(
    manifest: Any, artifact: Path, sha256: str | None, member: str | None, label: str
) -> SignatureCheck:
    """The signed manifest must record the artifact's digest (under `member`, when given)."""
    kind = manifest.serialization_type
    if kind.get("method") != "files" or kind.get("hash_type") != "sha256":
        return SignatureCheck(
            False,
            f"signature uses {kind.get('method')}/{kind.get('hash_type')} hashing; "
            "only files/sha256 is supported",
        )
    try:
        actual = sha256 or _sha256_file(artifact)
    except OSError as exc:
        return SignatureCheck(False, f"artifact cannot be read to check its signature: {exc}")
    entries = {str(rd.identifier): rd.digest.digest_value.hex() for rd in manifest.resource_descriptors()}
    if member is not None and member in entries:
        expected = {member: entries[member]}
    elif "." in entries:  # a single-file signature
        expected = {".": entries["."]}
    elif member is not None:
        return SignatureCheck(False, f"signature by {label} does not cover {member!r}")
    else:
        expected = entries
    for name, digest in expected.items():
        if digest == actual:
            shown = artifact.name if name == "." else name
            return SignatureCheck(True, f"signature by {label} verifies {shown}", key=label)
    return SignatureCheck(False, f"signature by {label} does not match the artifact's sha256 (tampered?)")
