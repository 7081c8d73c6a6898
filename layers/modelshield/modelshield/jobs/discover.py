"""The discover step: list the source (or read its S3 Inventory), filter, sniff, write the manifest.

The listing is paged by boto3 (past S3's 1,000-key pages; moto's interpreter cannot page an ItemReader
listing, and a filtered, sniffed manifest is what the Map should read anyway). Content decides what a model
is: the first bytes of every candidate go through the scanning registry's sniffers; the extension is only
a hint that keeps an unrecognised binary called `*.pt` in the job (where it fails closed) instead of
skipping it. Objects that are not models (text, zero-byte files, unrecognised bytes without a model
extension) are recorded as NOT_A_MODEL items at once and left out of the manifest.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelshield.errors import UsageError
from modelshield.jobs.models import Job, JobItem, ManifestEntry, Outcome, Tally
from modelshield.jobs.store import JobStore
from modelshield.models import Format, utcnow
from modelshield.scanning import registry

SNIFF_BYTES = registry.SNIFF_BYTES
SNIFF_THREADS = 16
# Sniffing costs one ranged GET per object: past this many candidates the worker sniffs instead (it reads
# the object anyway), so discovery of a million keys stays inside one Lambda invocation.
SNIFF_LIMIT = 20_000
NOT_MODEL_FORMATS = frozenset({Format.TEXT, Format.EMPTY})
MODEL_EXTENSIONS = frozenset(
    {
        ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".h5", ".hdf5",
        ".keras", ".onnx", ".gguf", ".ggml", ".safetensors", ".pb", ".tflite", ".mar", ".model", ".dill",
        ".sav", ".msgpack", ".zip", ".tar", ".tgz", ".gz",
    }
)  # fmt: skip
REPORTS_PREFIX = "modelshield-jobs/"  # our own reports, never job input even when they share a bucket


@dataclass(frozen=True)
class Discovered:
    manifest_bucket: str
    manifest_key: str
    candidates: int
    not_models: int

    def output(self) -> dict[str, Any]:
        """What the state machine's ItemReader reads next."""
        return {"bucket": self.manifest_bucket, "key": self.manifest_key, "count": self.candidates}


def manifest_key(job_id: str, attempt: int) -> str:
    return f"{REPORTS_PREFIX}{job_id}/manifest-{attempt}.json"


def is_model_candidate(head: bytes, key: str) -> bool:
    """Content first: a registered model or container format is a candidate; text and empty files are not;
    bytes no sniffer claims are a candidate only when the name says model (they will fail closed)."""
    fmt, _ = registry.detect(io.BytesIO(head))
    if fmt in NOT_MODEL_FORMATS:
        return False
    if fmt is Format.UNKNOWN:
        name = key.rsplit("/", 1)[-1].lower()
        return any(name.endswith(ext) for ext in MODEL_EXTENSIONS)
    return True


def sniff(s3: Any, entry: ManifestEntry) -> bool:
    if entry.size == 0:
        return False
    params: dict[str, Any] = {"Bucket": entry.bucket, "Key": entry.key, "Range": f"bytes=0-{SNIFF_BYTES - 1}"}
    if entry.version_id:
        params["VersionId"] = entry.version_id
    body = s3.get_object(**params)["Body"]
    try:
        return is_model_candidate(body.read(), entry.key)
    finally:
        body.close()


def list_source(s3: Any, job: Job) -> Iterator[ManifestEntry]:
    """Every current object of the source that passes the job's filters."""
    source = job.source
    rows = _inventory(s3, source.bucket, source.prefix) if source.inventory else _listing(s3, job)
    for entry in rows:
        if entry.key.startswith(REPORTS_PREFIX) or ".modelshield-staging-" in entry.key:
            continue
        prefix = "" if source.inventory else source.prefix
        if job.filters.accepts(entry.key, entry.size, prefix):
            yield entry


def _listing(s3: Any, job: Job) -> Iterator[ManifestEntry]:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=job.source.bucket, Prefix=job.source.prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/") and obj.get("Size", 0) == 0:
                continue  # a console "folder" marker
            yield ManifestEntry(
                bucket=job.source.bucket,
                key=obj["Key"],
                size=int(obj.get("Size", 0)),
                etag=str(obj.get("ETag", "")).strip('"') or None,
            )


def _inventory(s3: Any, bucket: str, manifest: str) -> Iterator[ManifestEntry]:
    """Rows of an S3 Inventory report (CSV, gzipped) named by its manifest.json: current versions only."""
    document = json.loads(s3.get_object(Bucket=bucket, Key=manifest)["Body"].read())
    if document.get("fileFormat", "CSV").upper() != "CSV":
        raise UsageError(f"s3://{bucket}/{manifest}: only CSV inventories are supported")
    schema = [f.strip() for f in str(document.get("fileSchema", "")).split(",")]
    if "Key" not in schema or "Bucket" not in schema:
        raise UsageError(f"s3://{bucket}/{manifest}: not an S3 Inventory manifest (no fileSchema with Key)")
    for file in document.get("files", []):
        raw = s3.get_object(Bucket=bucket, Key=file["key"])["Body"].read()
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
        for row in csv.reader(io.StringIO(text)):
            values = dict(zip(schema, row, strict=False))
            if values.get("IsDeleteMarker", "false").lower() == "true":
                continue
            if values.get("IsLatest", "true").lower() != "true":
                continue
            yield ManifestEntry(
                bucket=values["Bucket"],
                key=urllib.parse.unquote_plus(values["Key"]),
                version_id=values.get("VersionId") or None,
                size=int(values.get("Size") or 0),
                etag=values.get("ETag") or None,
            )


def discover(job: Job, *, s3: Any, store: JobStore, reports_bucket: str, attempt: int = 1) -> Discovered:
    """List, filter and sniff the job's source; record what is not a model; write the manifest."""
    entries = list(list_source(s3, job))
    sniffing = len(entries) <= SNIFF_LIMIT
    if sniffing:
        with ThreadPoolExecutor(SNIFF_THREADS) as pool:
            verdicts = list(pool.map(lambda e: sniff(s3, e), entries))
    else:
        verdicts = [True] * len(entries)
    candidates = [
        e.model_copy(update={"sniffed": sniffing}) for e, ok in zip(entries, verdicts, strict=True) if ok
    ]
    others = [e for e, ok in zip(entries, verdicts, strict=True) if not ok]
    store.update(
        job.job_id,
        counts=job.counts.model_copy(update={"total": len(entries)}),
        bytes=job.bytes.model_copy(update={"total": sum(e.size for e in entries)}),
    )
    record_not_models(store, job, others, attempt=attempt)
    key = manifest_key(job.job_id, attempt)
    write_manifest(s3, reports_bucket, key, candidates)
    return Discovered(reports_bucket, key, len(candidates), len(others))


def record_not_models(store: JobStore, job: Job, entries: Iterable[ManifestEntry], *, attempt: int) -> None:
    store.record_discovered(
        [
            JobItem(
                job_id=job.job_id,
                bucket=entry.bucket,
                key=entry.key,
                version_id=entry.version_id,
                size=entry.size,
                outcome=Outcome.NOT_A_MODEL,
                tally=Tally.SKIPPED,
                message="zero-byte file" if entry.size == 0 else "content is not a model format (sniffed)",
                dry_run=job.options.dry_run,
                attempt=attempt,
                updated_at=utcnow(),
            )
            for entry in entries
        ]
    )


def write_manifest(s3: Any, bucket: str, key: str, entries: list[ManifestEntry]) -> None:
    """A JSON array, the shape Distributed Map's ItemReader (InputType JSON) reads."""
    body = json.dumps([e.model_dump(exclude_none=True) for e in entries], separators=(",", ":"))
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")
