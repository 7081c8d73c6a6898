"""Gather what the policy rules need about an S3 object: the one module in policy/ that calls AWS.

Per source type:
- every source: object user metadata (x-amz-meta-license, -author, -hf-repo, -hf-revision,
  -base-model) and object tags;
- huggingface: the sibling README.md model card (front matter license / base_model) and the repo id,
  from metadata or the key layout `<prefix><org>/<name>/...`;
- s3: the uploader principal from the S3 event;
- a detached signature `<key>.sig`, or `model.sig` in the same prefix, downloaded into `workdir`.
Missing siblings are normal (None). Any other S3 error raises: a scan must not silently lose the
metadata a blocking rule depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from modelshield.aws import is_not_found
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


def _read_small(s3: Any, bucket: str, key: str, limit: int) -> bytes | None:
    """The first `limit` bytes of a sibling object, or None when it does not exist."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
    except ClientError as exc:
        if is_not_found(exc) or str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
            return None
        raise
    body = response["Body"]
    try:
        return body.read(limit)
    finally:
        body.close()


def _download_signature(s3: Any, bucket: str, key: str, workdir: Path) -> Path | None:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    if int(head.get("ContentLength", 0)) > MAX_SIGNATURE_BYTES:
        return None  # not a signature we would read; the author rule then reports "no signature"
    data = _read_small(s3, bucket, key, MAX_SIGNATURE_BYTES)
    if data is None:
        return None
    target = workdir / ("detached-" + key.rsplit("/", 1)[-1])
    target.write_bytes(data)
    return target


def gather_metadata(
    s3: Any,
    bucket: str,
    key: str,
    version_id: str | None,
    source: Source | None,
    *,
    event_principal: str | None,
    workdir: Path,
    artifact_path: Path,
) -> ArtifactMetadata:
    """ArtifactMetadata for s3://bucket/key (at version_id) under `source` (None: no source)."""
    head_args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        head_args["VersionId"] = version_id
    head = s3.head_object(**head_args)
    user = {str(k).lower().replace("_", "-"): str(v) for k, v in (head.get("Metadata") or {}).items()}
    tag_set = s3.get_object_tagging(**head_args).get("TagSet", [])
    tags = {str(t["Key"]): str(t["Value"]) for t in tag_set}

    source_type = source.type if source is not None else "s3"
    values: dict[str, Any] = {
        "source_type": source_type,
        "license": _first(user, "license"),
        "author": _first(user, "author"),
        "hf_repo": _first(user, "hf-repo", "source-repo"),
        "hf_revision": _first(user, "hf-revision", "revision"),
        "base_model": _first(user, "base-model"),
        "user_metadata": {k: v[:MAX_USER_METADATA_VALUE] for k, v in user.items()},
        "tags": tags,
        "artifact_path": str(artifact_path),
    }

    prefix = _prefix_of(key)
    if source_type == "huggingface":
        card_bytes = _read_small(s3, bucket, prefix + "README.md", MAX_MODEL_CARD_BYTES)
        if card_bytes is not None:
            card = parse_model_card(card_bytes.decode("utf-8", errors="replace"))
            values["license"] = values["license"] or license_from_card(card)
            values["base_model"] = values["base_model"] or base_model_from_card(card)
        if not values["hf_repo"]:
            values["hf_repo"] = hf_repo_from_key(key, source.prefix if source else _HF_DEFAULT_PREFIX)
    if source_type == "s3":
        values["uploader_principal"] = event_principal

    if not key.endswith(".sig"):
        direct = _download_signature(s3, bucket, key + ".sig", workdir)
        if direct is not None:
            values["signature_path"] = str(direct)
        else:
            shared = _download_signature(s3, bucket, prefix + "model.sig", workdir)
            if shared is not None:
                values["signature_path"] = str(shared)
                values["signature_member"] = key[len(prefix) :]
    return ArtifactMetadata.model_validate(values)
