"""The settle step: recount a job from its item records, decide its status, write the error report.

The counts come from the items table, not from the engine (moto's interpreter does not enforce
ToleratedFailurePercentage, and a Map run's own counts know nothing of outcomes), so a job's status means
the same locally and in AWS:
* CANCELLING → CANCELLED (items not started stay pending);
* the engine failed before any item was processed → FAILED, with its reason;
* failed items above the tolerated percentage, or items left unprocessed → FAILED;
* some failed (or quarantined) → COMPLETED_WITH_FAILURES; otherwise SUCCEEDED.
The error report goes to `s3://<reports>/modelshield-jobs/<job id>/errors.json` and `errors.csv`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

from modelshield.jobs.discover import REPORTS_PREFIX
from modelshield.jobs.models import ERROR_FIELDS, Counts, Job, JobItem, JobStatus, Operation, Outcome, Tally
from modelshield.jobs.store import JobStore
from modelshield.models import utcnow


def report_prefix(job_id: str) -> str:
    return f"{REPORTS_PREFIX}{job_id}/"


def errors_document(job_id: str, items: list[JobItem]) -> dict[str, Any]:
    """The JSON of `jobs errors` and of errors.json."""
    rows = [i.error_row() for i in sorted(items, key=lambda i: (i.bucket, i.key)) if i.tally is Tally.FAILED]
    return {"job_id": job_id, "errors": rows}


def errors_csv(document: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ERROR_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in document["errors"]:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in ERROR_FIELDS})
    return out.getvalue()


def decide(job: Job, counts: Counts, hard_failures: int, engine_error: str | None) -> tuple[JobStatus, str]:
    """The job's final status from its recounted items (quarantined items count as failed, but only
    FAILED outcomes are measured against the tolerated failure percentage)."""
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        return JobStatus.CANCELLED, f"cancelled; {counts.pending} item(s) were not started"
    if engine_error and counts.total == 0:
        return JobStatus.FAILED, engine_error
    processed = max(1, counts.total - counts.skipped)
    if hard_failures and hard_failures * 100.0 / processed > job.options.tolerated_failure_percent:
        return JobStatus.FAILED, (
            f"{hard_failures} of {processed} item(s) failed, more than the tolerated "
            f"{job.options.tolerated_failure_percent:g}%"
        )
    if counts.pending:
        return JobStatus.FAILED, engine_error or f"{counts.pending} item(s) were never processed"
    if counts.failed:
        return JobStatus.COMPLETED_WITH_FAILURES, f"{counts.failed} item(s) failed or were quarantined"
    return JobStatus.SUCCEEDED, ""


def left_in_plaintext(job: Job, item: JobItem) -> bool:
    """Whether `item` is a plaintext model that is still plaintext in its repository after `job`: scanned
    only, a dry run's would-be outcome, an encrypt that failed (nothing is removed before its replacement
    is verified), or a verify/rekey that found no ciphertext. An encrypt job's failure on an object that
    was already ciphertext (a damaged one: INTEGRITY) counts too: the tile errs towards "unprotected"."""
    if item.outcome is Outcome.SCANNED:
        return True
    if item.dry_run and item.outcome in (Outcome.ENCRYPTED, Outcome.QUARANTINED):
        return True
    if item.outcome is Outcome.FAILED:
        if job.operation is Operation.ENCRYPT:
            return item.code != "NOT_MODELSHIELD"  # someone else's ciphertext is not a plaintext model
        return item.code == "NOT_ENCRYPTED"
    return False


def settle(store: JobStore, s3: Any, job_id: str, *, reports_bucket: str, engine_error: Any = None) -> Job:
    job = store.get(job_id)
    items = list(store.items(job_id))
    tallies = Counter(i.tally for i in items)
    counts = Counts(
        total=job.counts.total,
        succeeded=tallies[Tally.SUCCEEDED],
        failed=tallies[Tally.FAILED],
        skipped=tallies[Tally.SKIPPED],
    )
    counts.pending = max(0, counts.total - counts.succeeded - counts.failed - counts.skipped)
    outcomes = Counter(i.outcome.value for i in items)
    left = [i for i in items if left_in_plaintext(job, i)]
    store.set_counters(
        job_id,
        counts,
        bytes_processed=sum(i.bytes_processed for i in items),
        outcomes=outcomes,
        plaintext=(len(left), sum(i.size for i in left)),
    )
    status, message = decide(job, counts, outcomes[Outcome.FAILED.value], _engine_error(engine_error))
    document = errors_document(job_id, items)
    prefix = report_prefix(job_id)
    s3.put_object(
        Bucket=reports_bucket,
        Key=f"{prefix}errors.json",
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )
    s3.put_object(
        Bucket=reports_bucket,
        Key=f"{prefix}errors.csv",
        Body=errors_csv(document).encode(),
        ContentType="text/csv",
    )
    return store.update(
        job_id,
        status=status,
        finished_at=utcnow(),
        report_uri=f"s3://{reports_bucket}/{prefix}",
        message=message,
    )


def _engine_error(value: Any) -> str | None:
    """The state machine's Catch output ({"Error", "Cause"}) as one line, or None."""
    if not value:
        return None
    if isinstance(value, dict):
        return f"{value.get('Error', 'error')}: {value.get('Cause', '')}"[:2000]
    return str(value)[:2000]
