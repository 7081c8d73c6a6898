"""Anchors of the audit chain: its head, copied where the roles that write the chain cannot reach.

Why: a principal able to rewrite every record after N *and* the head can forge a consistent chain
(`audit.py`). The AuditAnchorFunction copies the head (seq, hash) to an S3 Object Lock bucket in
compliance mode on every append batch (DynamoDB stream) and on a schedule; only its role may write there
and nobody, root included, can delete or overwrite a locked version. `audit verify` then checks the
chain against the latest anchor by default: a deleted, edited or rewritten record at or before the
anchored sequence number is caught without anyone keeping an anchor by hand.

The anchor never moves backwards: each run first checks that the previously anchored record still has
its anchored hash and that the head has not fallen below it. If either fails, the run writes an incident
object (also locked) instead of a new anchor, so a rolled-back or rewritten chain can never be
"re-anchored" into looking consistent. What remains: records appended after the latest anchor and
rewritten before the next run (seconds with the stream trigger) are not covered; the README says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from modelshield.audit import AuditStore, ChainHead, format_time, parse_time
from modelshield.errors import ModelShieldError
from modelshield.models import utcnow

LATEST = "latest.json"


class AnchorUnavailable(ModelShieldError):
    """The anchor bucket could not be read (it is configured, so verification must not silently skip it)."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: datetime
    table: str = ""

    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": format_time(self.at), "table": self.table}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Anchor:
        return cls(
            int(data["seq"]), str(data["hash"]), parse_time(str(data["at"])), str(data.get("table", ""))
        )


class AnchorStore(Protocol):
    def latest(self) -> Anchor | None: ...
    def put(self, anchor: Anchor) -> None: ...
    def incident(self, at: datetime, detail: dict[str, Any]) -> None: ...


class S3AnchorStore:
    """Anchors as JSON objects under `anchors/<table>/`: one per anchored seq plus `latest.json`.

    Every PUT carries a SHA-256 checksum (Object Lock buckets require one) and gets the bucket's default
    compliance-mode retention, so every version of `latest.json` is kept too.
    """

    def __init__(self, s3: Any, bucket: str, table: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.table = table
        self.prefix = f"anchors/{table}/"

    def latest(self) -> Anchor | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + LATEST)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            code = exc.response.get("Error", {}).get("Code", "")
            raise AnchorUnavailable(
                f"cannot read the audit anchor s3://{self.bucket}/{self.prefix}{LATEST}: {code}"
            ) from None
        try:
            return Anchor.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorUnavailable(
                f"the audit anchor s3://{self.bucket}/{self.prefix}{LATEST} is malformed: {exc}"
            ) from None

    def _put(self, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document, sort_keys=True).encode()
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )

    def put(self, anchor: Anchor) -> None:
        self._put(f"{self.prefix}{anchor.seq:012d}.json", anchor.to_json())
        self._put(self.prefix + LATEST, anchor.to_json())

    def incident(self, at: datetime, detail: dict[str, Any]) -> None:
        self._put(f"{self.prefix}incidents/{format_time(at)}.json", {"at": format_time(at), **detail})


@dataclass
class AnchorResult:
    status: str  # anchored | unchanged | empty | incident
    anchor: Anchor | None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "anchor": None if self.anchor is None else self.anchor.to_json(),
            "message": self.message,
        }


def anchor_chain(
    chain: AuditStore, anchors: AnchorStore, *, table: str = "", clock: Callable[[], datetime] = utcnow
) -> AnchorResult:
    """Anchor the current head, unless the chain went backwards or changed under the previous anchor."""
    head = chain.head()
    latest = anchors.latest()
    now = clock()
    if head is None:
        if latest is not None:
            return _incident(
                anchors, now, latest, f"the chain head is gone; record {latest.seq} was anchored"
            )
        return AnchorResult("empty", None, "the audit chain has no records yet")
    if latest is not None:
        if head.seq < latest.seq:
            why = f"the chain head fell back to {head.seq}, below anchored record {latest.seq}"
            return _incident(anchors, now, latest, why)
        anchored = chain.get(latest.seq)
        if anchored is None:
            return _incident(anchors, now, latest, f"anchored record {latest.seq} was deleted")
        if anchored.hash != latest.hash:
            return _incident(anchors, now, latest, f"anchored record {latest.seq} was rewritten")
        if head.seq == latest.seq:
            return AnchorResult("unchanged", latest, f"head {head.seq} already anchored")
    anchor = Anchor(head.seq, head.hash, now, table)
    anchors.put(anchor)
    return AnchorResult("anchored", anchor, f"anchored record {head.seq}")


def _incident(anchors: AnchorStore, now: datetime, latest: Anchor, why: str) -> AnchorResult:
    anchors.incident(now, {"latest_anchor": latest.to_json(), "problem": why})
    return AnchorResult("incident", latest, f"not re-anchored: {why}")
