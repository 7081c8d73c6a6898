"""`MetadataSource` for an S3 object version: its user metadata and tags, and siblings under its prefix.

The S3 side of `modelshield.policy.gather`'s port: siblings are read with one ranged GET each (never more
than the caller's limit), a detached signature is downloaded into `workdir` for the verifier. Missing
siblings are None; any other S3 error raises, so a blocking rule never loses the metadata it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from modelshield.aws import is_not_found


class S3Object:
    def __init__(self, s3: Any, bucket: str, key: str, version_id: str | None, *, workdir: Path) -> None:
        self.s3, self.bucket, self.key, self.version_id = s3, bucket, key, version_id
        self.prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        self.workdir = workdir

    def object_metadata(self) -> tuple[dict[str, str], dict[str, str]]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            args["VersionId"] = self.version_id
        head = self.s3.head_object(**args)
        tag_set = self.s3.get_object_tagging(**args).get("TagSet", [])
        return dict(head.get("Metadata") or {}), {str(t["Key"]): str(t["Value"]) for t in tag_set}

    def read_sibling(self, name: str, limit: int) -> bytes | None:
        try:
            response = self.s3.get_object(
                Bucket=self.bucket, Key=self.prefix + name, Range=f"bytes=0-{limit - 1}"
            )
        except ClientError as exc:
            if is_not_found(exc) or str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                return None
            raise
        body = response["Body"]
        try:
            return bytes(body.read(limit))
        finally:
            body.close()

    def sibling_file(self, name: str, limit: int) -> Path | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self.prefix + name)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        if int(head.get("ContentLength", 0)) > limit:
            return None  # not a signature we would read; the author rule then reports "no signature"
        data = self.read_sibling(name, limit)
        if data is None:
            return None
        target = self.workdir / ("detached-" + name)
        target.write_bytes(data)
        return target
