"""Gather what the policy rules need about an artifact, through a small port: no I/O of its own.

`MetadataSource` is the port: the artifact's own metadata (S3 user metadata and tags) and its siblings
(a `README.md` model card, a detached signature `<name>.sig` or a shared `model.sig`). Two
implementations: `LocalFiles` (below) for `modelshield scan PATH`, and `modelshield.s3_metadata.S3Object`
for uploads. The lookups themselves are written once, here, for both.

Per source type (uploads):
- every source: object user metadata (x-amz-meta-license, -author, -hf-repo, -hf-revision,
  -base-model) and object tags;
- huggingface: the sibling README.md model card (front matter license / base_model) and the repo id,
  from metadata or the key layout `<prefix><org>/<name>/...`;
- s3: the uploader principal from the S3 event;
- a detached signature `<key>.sig`, or `model.sig` in the same prefix.
Missing siblings are normal (None). Any other storage error raises: a scan must not silently lose the
metadata a blocking rule depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from modelshield.policy.groups import Source
from modelshield.policy.metadata import (
    MAX_MODEL_CARD_BYTES,
    ArtifactMetadata,
    base_model_from_card,
    license_from_card,
    parse_model_card,
)
from modelshield.policy.signing import MAX_SIGNATURE_BYTES

_HF_DEFAULT_PREFIX = "huggingface/"
MAX_USER_METADATA_VALUE = 1024  # S3 caps all user metadata at 2 KB; be defensive anyway
MODEL_CARD = "README.md"
SHARED_SIGNATURE = "model.sig"


class MetadataSource(Protocol):
    """Where an artifact's metadata and siblings are read (an S3 object and its prefix, a local file)."""

    def object_metadata(self) -> tuple[dict[str, str], dict[str, str]]:
        """The artifact's user metadata and tags (both empty for a local file)."""
        ...

    def read_sibling(self, name: str, limit: int) -> bytes | None:
        """The first `limit` bytes of the file `name` beside the artifact; None when there is none."""
        ...

    def sibling_file(self, name: str, limit: int) -> Path | None:
        """A local path holding sibling `name` (downloaded when remote); None if absent or over `limit`."""
        ...


class LocalFiles:
    """`MetadataSource` for a file on disk: siblings are files in its directory; no metadata or tags."""

    def __init__(self, path: Path) -> None:
        self.directory = path.parent
        self.path = path

    def object_metadata(self) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {}

    def read_sibling(self, name: str, limit: int) -> bytes | None:
        try:
            with (self.directory / name).open("rb") as stream:
                return stream.read(limit)
        except OSError:
            return None  # absent or unreadable: a local scan reports what it can read

    def sibling_file(self, name: str, limit: int) -> Path | None:
        candidate = self.directory / name
        return candidate if candidate.is_file() and candidate != self.path else None


def _first(meta: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = meta.get(name)
        if value and value.strip():
            return value.strip()[:MAX_USER_METADATA_VALUE]
    return None


def _prefix_of(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def hf_repo_from_key(key: str, prefix: str) -> str | None:
    """'org/name' from '<prefix>org/name/<file...>' (None when the key has no such layout)."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    return f"{parts[0]}/{parts[1]}"


def model_card_fields(source: MetadataSource) -> dict[str, Any]:
    """license and base_model from the sibling model card's front matter ({} without a card)."""
    card_bytes = source.read_sibling(MODEL_CARD, MAX_MODEL_CARD_BYTES)
    if card_bytes is None:
        return {}
    card = parse_model_card(card_bytes.decode("utf-8", errors="replace"))
    return {"license": license_from_card(card), "base_model": base_model_from_card(card)}


def signature_fields(source: MetadataSource, name: str) -> dict[str, Any]:
    """The detached signature for artifact `name`: `<name>.sig`, else a shared `model.sig` naming it."""
    if name.endswith(".sig"):
        return {}
    direct = source.sibling_file(name + ".sig", MAX_SIGNATURE_BYTES)
    if direct is not None:
        return {"signature_path": str(direct)}
    shared = source.sibling_file(SHARED_SIGNATURE, MAX_SIGNATURE_BYTES)
    if shared is not None:
        return {"signature_path": str(shared), "signature_member": name}
    return {}


def gather_metadata(
    source: MetadataSource,
    key: str,
    group_source: Source | None,
    *,
    event_principal: str | None,
    artifact_path: Path | None,
) -> ArtifactMetadata:
    """ArtifactMetadata for an uploaded artifact `key` under `group_source` (None: no source)."""
    raw_user, raw_tags = source.object_metadata()
    user = {str(k).lower().replace("_", "-"): str(v) for k, v in raw_user.items()}
    tags = {str(k): str(v) for k, v in raw_tags.items()}
    source_type = group_source.type if group_source is not None else "s3"
    values: dict[str, Any] = {
        "source_type": source_type,
        "license": _first(user, "license"),
        "author": _first(user, "author"),
        "hf_repo": _first(user, "hf-repo", "source-repo"),
        "hf_revision": _first(user, "hf-revision", "revision"),
        "base_model": _first(user, "base-model"),
        "user_metadata": {k: v[:MAX_USER_METADATA_VALUE] for k, v in user.items()},
        "tags": tags,
        "artifact_path": str(artifact_path) if artifact_path is not None else None,
    }
    if source_type == "huggingface":
        card = model_card_fields(source)
        values["license"] = values["license"] or card.get("license")
        values["base_model"] = values["base_model"] or card.get("base_model")
        if not values["hf_repo"]:
            prefix = group_source.prefix if group_source else _HF_DEFAULT_PREFIX
            values["hf_repo"] = hf_repo_from_key(key, prefix)
    if source_type == "s3":
        values["uploader_principal"] = event_principal
    values.update(signature_fields(source, key[len(_prefix_of(key)) :]))
    return ArtifactMetadata.model_validate(values)


def local_metadata(base: ArtifactMetadata, path: Path) -> ArtifactMetadata:
    """`base` (from --metadata) plus what an upload's gatherer would find next to the file."""
    files = LocalFiles(path)
    update: dict[str, Any] = {"artifact_path": str(path)}
    if base.license is None or base.base_model is None:
        card = model_card_fields(files)
        if card:
            update["license"] = base.license or card["license"]
            update["base_model"] = base.base_model or card["base_model"]
    if base.signature_path is None:
        update.update(signature_fields(files, path.name))
    return base.model_copy(update=update)
