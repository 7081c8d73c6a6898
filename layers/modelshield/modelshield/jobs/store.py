"""The jobs table: one partition per job, holding the job record and one record per item.

Schema (template.yaml `JobsTable`; the dashboard reads it too, see the README's data model):
* `job_id` (S, partition) + `sk` (S, sort): `sk = "job"` is the job; `sk = "item#<item id>"` its items
  (item id: sha256 of bucket/key, 32 hex). Items carry bucket, key, version_id, outcome, tally, code,
  message, action, scan_id, verdict, attempt.
* The job record's live counters are flat numbers updated atomically with each item write:
  `n_succeeded`, `n_failed`, `n_skipped`, `bytes_processed`, `o_<OUTCOME>`; `counts.total` and
  `bytes.total` come from discovery. `pending = total - succeeded - failed - skipped`.
* GSI `JobsByCreation`: `kind` (S, "job" on job records only: a sparse index) + `created_at` (S).

An item write is conditional on the item not having been recorded in this attempt yet, so a redelivered
message or a retried batch never counts twice; the counters follow it (see `record`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.errors import ArtifactNotFound, JobConflict
from modelshield.jobs.models import Counts, Job, JobItem, JobStatus, Tally
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item

JOB_SK = "job"
ITEM_PREFIX = "item#"
LIST_INDEX = "JobsByCreation"
_COUNTERS = {Tally.SUCCEEDED: "n_succeeded", Tally.FAILED: "n_failed", Tally.SKIPPED: "n_skipped"}


class JobStore:
    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)
        self.client = self.table.meta.client  # a resource's client: takes Python values, not wire types

    # -- jobs ---------------------------------------------------------------------------------------
    def create(self, job: Job) -> Job:
        item = {**self._job_item(job), "n_succeeded": 0, "n_failed": 0, "n_skipped": 0, "bytes_processed": 0}
        self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(job_id)")
        return job

    def get(self, job_id: str) -> Job:
        item = self.table.get_item(Key={"job_id": job_id, "sk": JOB_SK}, ConsistentRead=True).get("Item")
        if not item:
            raise ArtifactNotFound(f"no job {job_id!r}: list jobs with `modelshield jobs list`")
        return _job_from(item)

    def save(self, job: Job, *, expected_revision: int) -> Job:
        """Replace the job's own fields (never its live counters) if nobody changed it meanwhile."""
        new = job.model_copy(update={"revision": expected_revision + 1})
        fields = {k: v for k, v in self._job_item(new).items() if k not in ("job_id", "sk")}
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": v for i, v in enumerate(fields.values())}
        try:
            self.table.update_item(
                Key={"job_id": job.job_id, "sk": JOB_SK},
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
                ConditionExpression="#rev = :expected",
                ExpressionAttributeNames={**names, "#rev": "revision"},
                ExpressionAttributeValues={**values, ":expected": expected_revision},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise JobConflict(f"job {job.job_id} changed meanwhile; read it again") from None
            raise
        return self.get(job.job_id)

    def update(self, job_id: str, **changes: Any) -> Job:
        """Read-modify-write with optimistic locking, retried on conflicts (status moves are few)."""
        for _ in range(10):
            job = self.get(job_id)
            try:
                return self.save(job.model_copy(update=changes), expected_revision=job.revision)
            except JobConflict:
                continue
        raise JobConflict(f"job {job_id} keeps changing; try again")

    def set_status(self, job_id: str, status: JobStatus, *, only_from: set[JobStatus] | None = None) -> bool:
        """Move the status; with `only_from`, only when the job is currently in one of those states."""
        values: dict[str, Any] = {":s": status.value}
        condition = "attribute_exists(job_id)"
        if only_from:
            keys = [f":from{i}" for i in range(len(only_from))]
            values.update({k: s.value for k, s in zip(keys, sorted(only_from), strict=True)})
            condition += f" AND #status IN ({', '.join(keys)})"
        try:
            self.table.update_item(
                Key={"job_id": job_id, "sk": JOB_SK},
                UpdateExpression="SET #status = :s ADD revision :one",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={**values, ":one": 1},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def status(self, job_id: str) -> JobStatus:
        """Just the status (the worker asks before every item, to stop promptly on cancel)."""
        item = self.table.get_item(
            Key={"job_id": job_id, "sk": JOB_SK},
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "status"},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            raise ArtifactNotFound(f"no job {job_id!r}")
        return JobStatus(item["status"])

    def list(self, limit: int = 50) -> list[Job]:
        """Newest first."""
        page = self.table.query(
            IndexName=LIST_INDEX,
            KeyConditionExpression=Key("kind").eq(JOB_SK),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_job_from(i) for i in page.get("Items", [])]

    def set_counters(
        self,
        job_id: str,
        counts: Counts,
        *,
        bytes_processed: int,
        outcomes: dict[str, int],
        plaintext: tuple[int, int] = (0, 0),
    ) -> None:
        """Overwrite the live counters with a recount from the item records (the settle step);
        `plaintext` is (objects, bytes) of the plaintext models the job left as they were."""
        values: dict[str, Any] = {
            "n_succeeded": counts.succeeded,
            "n_failed": counts.failed,
            "n_skipped": counts.skipped,
            "bytes_processed": bytes_processed,
            "plaintext_objects": plaintext[0],
            "plaintext_bytes": plaintext[1],
            **{f"o_{k}": v for k, v in outcomes.items()},
        }
        names = {f"#n{i}": k for i, k in enumerate(values)}
        self.table.update_item(
            Key={"job_id": job_id, "sk": JOB_SK},
            UpdateExpression="SET " + ", ".join(f"#n{i} = :n{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":n{i}": v for i, v in enumerate(values.values())},
        )

    # -- items --------------------------------------------------------------------------------------
    def get_item(self, job_id: str, item_id: str) -> JobItem | None:
        item = self.table.get_item(
            Key={"job_id": job_id, "sk": ITEM_PREFIX + item_id}, ConsistentRead=True
        ).get("Item")
        return JobItem.model_validate(from_item(item)) if item else None

    def record(self, item: JobItem, previous: JobItem | None) -> bool:
        """Write the item, then move the job's live counters; False if this attempt was recorded already.

        Two writes, not a transaction: the conditional put makes a redelivery a no-op, and a crash between
        the two only delays the live counters, which the settle step recounts from the items anyway.
        (moto's TransactWriteItems copies the whole table per call, which made 1,000 items take minutes.)
        """
        body = {**to_item(item), "job_id": item.job_id, "sk": ITEM_PREFIX + item.item_id}
        try:
            if previous is None:
                self.table.put_item(Item=body, ConditionExpression="attribute_not_exists(sk)")
            else:
                self.table.put_item(
                    Item=body,
                    ConditionExpression="attempt = :prev",
                    ExpressionAttributeValues={":prev": previous.attempt},
                )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        adds = {
            _COUNTERS[item.tally]: 1,
            "bytes_processed": item.bytes_processed,
            f"o_{item.outcome.value}": 1,
        }
        if previous is not None:
            for old in (_COUNTERS[previous.tally], f"o_{previous.outcome.value}"):
                adds[old] = adds.get(old, 0) - 1
        self._add(item.job_id, adds)
        return True

    def record_discovered(self, items: list[JobItem]) -> None:
        """The discover step's NOT_A_MODEL items in batches, and their counters set (not added): discovery
        runs before any worker and again only on a redelivery, which must not count them twice."""
        if not items:
            return
        with self.table.batch_writer(overwrite_by_pkeys=["job_id", "sk"]) as batch:
            for item in items:
                batch.put_item(
                    Item={**to_item(item), "job_id": item.job_id, "sk": ITEM_PREFIX + item.item_id}
                )
        job_id = items[0].job_id
        outcome = f"o_{items[0].outcome.value}"
        self.table.update_item(
            Key={"job_id": job_id, "sk": JOB_SK},
            UpdateExpression="SET #n = :n, #o = :n",
            ExpressionAttributeNames={"#n": _COUNTERS[items[0].tally], "#o": outcome},
            ExpressionAttributeValues={":n": len(items)},
        )

    def _add(self, job_id: str, adds: dict[str, int]) -> None:
        names = {f"#c{i}": k for i, k in enumerate(adds)}
        values = {f":c{i}": v for i, v in enumerate(adds.values())}
        self.table.update_item(
            Key={"job_id": job_id, "sk": JOB_SK},
            UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(adds))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def items(self, job_id: str) -> Iterator[JobItem]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("job_id").eq(job_id) & Key("sk").begins_with(ITEM_PREFIX)
        }
        while True:
            page = self.table.query(**kwargs)
            for raw in page.get("Items", []):
                yield JobItem.model_validate(from_item(raw))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- helpers ------------------------------------------------------------------------------------
    def _job_item(self, job: Job) -> dict[str, Any]:
        body = to_item(job)
        for derived in ("counts", "bytes", "outcomes"):
            body.pop(derived, None)
        body["total"] = job.counts.total
        body["bytes_total"] = job.bytes.total
        return {**body, "job_id": job.job_id, "sk": JOB_SK, "kind": JOB_SK, "created_at": body["created_at"]}


def _job_from(item: dict[str, Any]) -> Job:
    raw = from_item(item)
    succeeded, failed, skipped = (int(raw.pop(k, 0)) for k in ("n_succeeded", "n_failed", "n_skipped"))
    total = int(raw.pop("total", 0))
    processed = int(raw.pop("bytes_processed", 0))
    outcomes = {k[2:]: int(v) for k, v in list(raw.items()) if k.startswith("o_") and int(v)}
    for key in [k for k in raw if k.startswith("o_")]:
        raw.pop(key)
    raw["counts"] = Counts(
        total=total,
        succeeded=succeeded,
        failed=failed,
        skipped=skipped,
        pending=max(0, total - succeeded - failed - skipped),
    ).model_dump()
    raw["bytes"] = {"total": int(raw.pop("bytes_total", 0)), "processed": processed}
    raw["outcomes"] = outcomes
    for extra in ("sk", "kind"):
        raw.pop(extra, None)
    return Job.model_validate(raw)
