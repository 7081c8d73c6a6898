"""Typed settings for each rule, as a security group's YAML spells them under `settings:`.

One model per rule family; every model forbids unknown fields so that a typo (`aproved_licenses`)
is a load error with a line number instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from modelshield.models import Format, Severity

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIGNING_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "30 GiB" / "500MB", so limits stay readable in YAML."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1073741824 or '1 GiB'")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = match.groups()
        return int(float(number) * _UNITS[(unit or "B").upper()])
    raise ValueError(f"expected a size such as 1073741824 or '1 GiB', got {value!r}")


def parse_severity(value: Any) -> Severity:
    """Severity from a name (case-insensitive) or its number; the error lists the valid names."""
    try:
        return Severity.parse(value)
    except (KeyError, ValueError, AttributeError, TypeError):
        names = ", ".join(s.name.lower() for s in Severity)
        raise ValueError(f"unknown severity {value!r} (use one of: {names})") from None


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FindingSettings(_Settings):
    """Scanner rules: which findings count. The default counts every finding of the rule."""

    min_severity: Severity = Field(Severity.INFO, description="findings below this severity do not fail")

    @field_validator("min_severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Severity:
        return parse_severity(value)

    @field_serializer("min_severity")
    def _severity_name(self, value: Severity) -> str:
        return value.name.lower()


class LicenseSettings(_Settings):
    """MS-LICENSE: SPDX ids (case-insensitive). Unset means any declared license passes."""

    approved_licenses: list[str] | None = Field(None, description="SPDX ids; unset: any declared license")

    @field_validator("approved_licenses")
    @classmethod
    def _lower(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [v.strip().lower() for v in value]
        if any(not v for v in cleaned):
            raise ValueError("license ids must not be empty")
        return cleaned


class FormatSettings(_Settings):
    """MS-FORMAT-SAFE: formats allowed anywhere inside the artifact, and whether pickle-based ones are."""

    approved_formats: list[Format] | None = Field(None, description="unset: any format")
    pickle_based: Literal["allow", "deny"] = Field(
        "allow", description="deny: fail on any pickle-based format"
    )
    # Formats that carry no code and never count against `approved_formats` (config JSON inside a
    # .keras archive, a README next to the weights, the signature bundled with a model).
    inert_formats: list[Format] = Field(
        default_factory=lambda: [Format.TEXT, Format.SIGNATURE],
        description="never count against approved_formats",
    )


class AuthorSettings(_Settings):
    """MS-AUTHOR-VERIFIED: trust anchors. Any one that matches verifies the author."""

    trusted_public_keys: list[str] = Field(
        default_factory=list, description="EC public keys (PEM text or file path) for model signatures"
    )
    approved_orgs: list[str] = Field(
        default_factory=list, description="Hugging Face organisations (huggingface sources)"
    )
    approved_principals: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns for the S3 event's uploader principalId "
        "(e.g. AWS:AROAEXAMPLE:alice) or an ARN (s3 sources)",
    )

    @field_validator("trusted_public_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        """Inline PEM is checked now, so a pasted-wrong key is a load error rather than a failed scan.
        A path is checked when the rule runs (the file exists where scans run, not where YAML is edited)."""
        for index, key in enumerate(value):
            if not key.strip():
                raise ValueError("a trusted public key must be PEM text or a file path, not empty")
            if "-----BEGIN" in key:
                _check_ec_public_key(key, index)
        return value


class SizeSettings(_Settings):
    """MS-SIZE-LIMIT: the largest artifact the group accepts (bytes, or '30 GiB')."""

    max_bytes: int = Field(30 * 10**9, description="bytes, or a string such as '30 GiB'")

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        size = parse_size(value)
        if size <= 0:
            raise ValueError("max_bytes must be positive")
        return size


class HashPinSettings(_Settings):
    """MS-HASH-PIN: known-bad digests, and per key pattern the only digests allowed."""

    denied_sha256: list[str] = Field(default_factory=list, description="digests that always fail")
    pinned: dict[str, list[str]] = Field(
        default_factory=dict, description="artifact-key glob -> the only sha256 digests allowed there"
    )

    @field_validator("denied_sha256")
    @classmethod
    def _digests(cls, value: list[str]) -> list[str]:
        return [_check_sha256(v) for v in value]

    @field_validator("pinned")
    @classmethod
    def _pins(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {pattern: [_check_sha256(v) for v in digests] for pattern, digests in value.items()}


def _check_ec_public_key(pem: str, index: int) -> None:
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"trusted_public_keys[{index}] is not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _SIGNING_CURVES:
        raise ValueError(
            f"trusted_public_keys[{index}] must be an EC key on {', '.join(_SIGNING_CURVES)} "
            "(what OpenSSF model signing uses)"
        )


def _check_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not _SHA256.match(digest):
        raise ValueError(f"{value!r} is not a sha256 hex digest (64 hex characters)")
    return digest
