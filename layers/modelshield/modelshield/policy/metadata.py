"""What the policy rules know about an artifact besides its bytes, and pure parsers that build it.

Everything here is uploader-supplied and therefore a claim, not a fact: a license in object metadata
or a model card is what the uploader says. Only a signature (checked in signing.py) proves anything.
Parsers are bounded and never raise on hostile input (a broken model card is just "no metadata").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from modelshield.errors import UsageError

MAX_MODEL_CARD_BYTES = 256 * 1024  # front matter is a few hundred bytes; cards with it rarely exceed this
MAX_FRONT_MATTER_CHARS = 64 * 1024


class ArtifactMetadata(BaseModel):
    """Claims and provenance gathered for one artifact (object metadata, tags, model card, signature)."""

    source_type: Literal["s3", "huggingface", "local"] = "local"
    license: str | None = None
    author: str | None = None  # claimed, never used to verify anything
    uploader_principal: str | None = None  # the IAM principal from the S3 event (s3 sources)
    hf_repo: str | None = None  # "org/name"
    hf_revision: str | None = None
    base_model: str | None = None
    signature_path: str | None = None  # local path to a detached signature, if one was found
    signature_member: str | None = None  # the artifact's path inside a directory signature (model.sig)
    artifact_path: str | None = None  # local path of the artifact (for signature verification)
    user_metadata: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def hf_org(self) -> str | None:
        if not self.hf_repo or "/" not in self.hf_repo:
            return None
        return self.hf_repo.split("/", 1)[0] or None


def parse_model_card(text: str) -> dict[str, Any]:
    """The YAML front matter of a Hugging Face README.md ({} when absent or invalid).

    Only the leading `---` block is parsed, with yaml.safe_load, and only within MAX_FRONT_MATTER_CHARS.
    """
    head = text[: MAX_FRONT_MATTER_CHARS + 8].lstrip("\ufeff")
    lines = head.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "...")), None)
    if end is None:
        return {}  # unterminated (or longer than the bound): treat as no front matter
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def license_from_card(card: Mapping[str, Any]) -> str | None:
    """The card's license as one SPDX-ish expression ("mit", "apache-2.0 OR mit")."""
    value = card.get("license")
    if isinstance(value, str) and value.strip():
        if value.strip().lower() == "other" and isinstance(card.get("license_name"), str):
            return str(card["license_name"]).strip() or "other"
        return value.strip()
    if isinstance(value, list):
        names = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        return " OR ".join(names) or None
    return None


def base_model_from_card(card: Mapping[str, Any]) -> str | None:
    value = card.get("base_model")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and isinstance(value[0], str):
        return ", ".join(v for v in value if isinstance(v, str))
    return None


# --metadata KEY=VALUE names (and aliases) -> ArtifactMetadata fields.
PAIR_KEYS = {
    "license": "license",
    "author": "author",
    "source_repo": "hf_repo",
    "hf_repo": "hf_repo",
    "revision": "hf_revision",
    "hf_revision": "hf_revision",
    "base_model": "base_model",
    "uploader": "uploader_principal",
    "uploader_principal": "uploader_principal",
    "signature": "signature_path",
    "signature_path": "signature_path",
    "source_type": "source_type",
}


def metadata_from_pairs(
    pairs: Sequence[str], source_type: Literal["s3", "huggingface", "local"] = "local"
) -> ArtifactMetadata:
    """ArtifactMetadata from CLI `--metadata KEY=VALUE` pairs (UsageError names the bad pair)."""
    values: dict[str, str] = {"source_type": source_type}
    given: set[str] = set()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--metadata {pair!r}: expected KEY=VALUE, e.g. license=apache-2.0")
        if key not in PAIR_KEYS:
            raise UsageError(
                f"--metadata {pair!r}: unknown key {key!r} (known: {', '.join(sorted(PAIR_KEYS))})"
            )
        field = PAIR_KEYS[key]
        if field in given:
            raise UsageError(f"--metadata {pair!r}: {key} given twice")
        given.add(field)
        values[field] = value.strip()
    if values["source_type"] not in ("s3", "huggingface", "local"):
        raise UsageError(f"--metadata source_type={values['source_type']!r}: use s3, huggingface or local")
    return ArtifactMetadata.model_validate(values)
