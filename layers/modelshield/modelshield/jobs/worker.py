"""The JobWorker: every step of the state machine arrives here as an SQS message carrying a task token.

`discover`, each batch of the Distributed Map (`items`) and `settle` are all `sqs:sendMessage.
waitForTaskToken` tasks on the jobs work queue, consumed by this one function (in AWS through the SQS
event source, locally by the local stack's poller invoking the same handler). So the real code runs in
both places, although moto's interpreter cannot run Lambda tasks. Each message is answered with
SendTaskSuccess or SendTaskFailure:
* `ModelShield.Throttled` (KMS/S3 throttling): the state machine retries with exponential backoff;
* `ModelShield.ItemsFailed`: some items of the batch FAILED (they are recorded; the Map's
  ToleratedFailurePercentage decides whether the run goes on);
* `ModelShield.StepFailed`: anything else (the settle step records the reason).
Items are recorded once per attempt, so a redelivered message does nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelshield.aws import is_not_found
from modelshield.errors import ModelShieldError
from modelshield.jobs import inplace
from modelshield.jobs.discover import discover, sniff
from modelshield.jobs.models import (
    Job,
    JobItem,
    JobStatus,
    ManifestEntry,
    Operation,
    Outcome,
    Tally,
    item_id,
    tally_of,
)
from modelshield.jobs.settle import settle
from modelshield.jobs.store import JobStore
from modelshield.models import ArtifactRef, utcnow
from modelshield.observability import logger
from modelshield.pipeline import Runtime

THROTTLE_MARKERS = ("Throttl", "SlowDown", "TooManyRequests", "RequestLimitExceeded", "LimitExceeded")


class Throttled(Exception):
    """KMS or S3 asked us to slow down: the state machine retries the batch with backoff."""


@dataclass
class JobRuntime:
    """What the worker talks to. Built once per Lambda container (or once by the local stack)."""

    pipeline: Runtime
    store: JobStore
    sfn: Any
    reports_bucket: str
    rotator: Callable[[], Any]  # () -> modelshield.rotation.Rotator, built on first rekey
    workdir: Path
    _key_arns: dict[str, str] = field(default_factory=dict)

    def key_arn(self, key_id: str) -> str:
        if key_id not in self._key_arns:
            self._key_arns[key_id] = str(self.pipeline.kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])
        return self._key_arns[key_id]


# -- the message handler -----------------------------------------------------------------------------
def handle_message(body: str, jr: JobRuntime) -> None:
    """Run one step and answer its task token. Never raises for a step failure: the token carries it."""
    message = json.loads(body)
    token = message["token"]
    try:
        output = run_step(message, jr)
    except Throttled as exc:
        jr.sfn.send_task_failure(taskToken=token, error="ModelShield.Throttled", cause=str(exc)[:32000])
        return
    except ItemsFailed as exc:
        jr.sfn.send_task_failure(taskToken=token, error="ModelShield.ItemsFailed", cause=str(exc)[:32000])
        return
    except (ModelShieldError, ClientError, BotoCoreError, ValueError, KeyError) as exc:
        logger.exception("job step failed", extra={"step": message.get("step")})
        jr.sfn.send_task_failure(
            taskToken=token, error="ModelShield.StepFailed", cause=f"{type(exc).__name__}: {exc}"[:32000]
        )
        return
    jr.sfn.send_task_success(taskToken=token, output=json.dumps(output))


class ItemsFailed(Exception):
    """Some items of a batch failed; they are recorded with their reasons."""


def run_step(message: dict[str, Any], jr: JobRuntime) -> dict[str, Any]:
    step = message.get("step")
    if step == "discover":
        return run_discover(jr, message["job_id"], int(message.get("attempt", 1)))
    if step == "items":
        return run_batch(jr, message["input"])
    if step == "settle":
        job = settle(
            jr.store,
            jr.pipeline.s3,
            message["job_id"],
            reports_bucket=jr.reports_bucket,
            engine_error=message.get("error"),
        )
        return {"job_id": job.job_id, "status": job.status.value}
    raise ValueError(f"unknown job step {step!r}")


def run_discover(jr: JobRuntime, job_id: str, attempt: int) -> dict[str, Any]:
    job = jr.store.get(job_id)
    started = jr.store.set_status(job_id, JobStatus.RUNNING, only_from={JobStatus.PENDING})
    if started:
        jr.store.update(job_id, started_at=utcnow())
    try:
        found = discover(
            job, s3=jr.pipeline.s3, store=jr.store, reports_bucket=jr.reports_bucket, attempt=attempt
        )
    except ClientError as exc:
        _raise_if_throttled(exc)
        raise
    jr.store.update(job_id, manifest_uri=f"s3://{found.manifest_bucket}/{found.manifest_key}")
    logger.info("job discovered", extra={"job_id": job_id, "candidates": found.candidates})
    return found.output()


def run_batch(jr: JobRuntime, payload: dict[str, Any]) -> dict[str, Any]:
    """One Map child: a batch (`Items`, with ItemBatcher) or a single item (moto's interpreter)."""
    entries = payload.get("Items") or [payload]
    results: list[str] = []
    failures: list[str] = []
    for raw in entries:
        job_id, attempt = raw["job_id"], int(raw.get("attempt", 1))
        status = jr.store.status(job_id)
        if status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
            results.append("CANCELLED")  # left PENDING: cancelling stops new items
            continue
        item = process_entry(jr, jr.store.get(job_id), ManifestEntry.model_validate(raw["entry"]), attempt)
        results.append(item.outcome.value)
        if item.outcome is Outcome.FAILED:
            failures.append(f"s3://{item.bucket}/{item.key}: {item.code}: {item.message}")
    if failures:
        raise ItemsFailed("; ".join(failures)[:30000])
    return {"outcomes": results}


# -- one item ----------------------------------------------------------------------------------------
def process_entry(jr: JobRuntime, job: Job, entry: ManifestEntry, attempt: int) -> JobItem:
    """Do the job's operation on one object and record the outcome (once per attempt)."""
    previous = jr.store.get_item(job.job_id, item_id(entry.bucket, entry.key))
    if previous is not None and previous.attempt >= attempt:
        return previous  # already done in this attempt: a redelivered message
    started = time.monotonic()
    jr.workdir.mkdir(parents=True, exist_ok=True)
    try:
        item = _operate(jr, job, entry, attempt)
    except Throttled:
        raise
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError):
            _raise_if_throttled(exc)
        item = _failed(
            job, entry, attempt, "S3_OR_KMS", str(exc), "check the worker role's access, then `jobs retry`"
        )
    except ModelShieldError as exc:
        if any(m in str(exc) for m in THROTTLE_MARKERS):
            raise Throttled(str(exc)) from None
        item = _failed(job, entry, attempt, _code(exc), str(exc), _action(exc))
    except OSError as exc:
        item = _failed(
            job, entry, attempt, "IO", str(exc), "raise the worker's ephemeral storage, then `jobs retry`"
        )
    jr.store.record(item, previous)
    logger.info(
        "job item",
        extra={
            "job_id": job.job_id,
            "key": entry.key,
            "outcome": item.outcome.value,
            "ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return item


def _operate(jr: JobRuntime, job: Job, entry: ManifestEntry, attempt: int) -> JobItem:
    s3 = jr.pipeline.s3
    try:
        head = s3.head_object(Bucket=entry.bucket, Key=entry.key)
    except ClientError as exc:
        if is_not_found(exc):
            return _item(job, entry, attempt, Outcome.GONE, message="deleted after discovery; nothing to do")
        raise
    current = inplace.current_version(s3, entry.bucket, entry.key, head)
    entry = entry.model_copy(update={"version_id": current.version_id, "size": current.size})
    if current.envelope:
        return _encrypted_object(jr, job, entry, attempt, current)
    if not entry.sniffed and not sniff(s3, entry):
        return _item(
            job, entry, attempt, Outcome.NOT_A_MODEL, message="content is not a model format (sniffed)"
        )
    ref = ArtifactRef(bucket=entry.bucket, key=entry.key, version_id=current.version_id)
    if job.operation in (Operation.VERIFY, Operation.REKEY):
        return _failed(
            job,
            entry,
            attempt,
            "NOT_ENCRYPTED",
            f"a plaintext model: there is nothing to {job.operation.value}",
            "run an encrypt job over it first",
        )
    if job.operation is Operation.SCAN or job.options.dry_run:
        return _scan(jr, job, entry, attempt, ref)
    done = inplace.encrypt_in_place(jr.pipeline, ref, jr.workdir, job_id=job.job_id, key_arn=jr.key_arn)
    if done.state.value == "ENCRYPTED":
        return _item(
            job,
            entry,
            attempt,
            Outcome.ENCRYPTED,
            scan_id=done.scan_id,
            verdict=done.evaluated.verdict.value,
            new_version_id=done.stored.version_id,
            processed=done.size,
            message=f"encrypted; {len(done.removed_versions)} plaintext version(s) removed",
        )
    return _item(
        job,
        entry,
        attempt,
        Outcome.QUARANTINED,
        scan_id=done.scan_id,
        verdict=done.evaluated.verdict.value,
        processed=done.size,
        code=done.evaluated.verdict.value,
        message=_findings(done.evaluated) + f"; moved to s3://{done.stored.bucket}/{done.stored.key}",
        action="the plaintext was removed from the repository; review it with `modelshield verdict` "
        "and the quarantined copy with a Security Engineer",
    )


def _scan(jr: JobRuntime, job: Job, entry: ManifestEntry, attempt: int, ref: ArtifactRef) -> JobItem:
    """`scan` jobs record the verdict; dry runs of any operation say what would happen, recording nothing."""
    if job.options.dry_run:
        evaluated, _sha, size = inplace.evaluate_only(jr.pipeline, ref, jr.workdir)
        scan_id = None
    else:
        evaluated, record = inplace.scan_and_record(jr.pipeline, ref, jr.workdir)
        size, scan_id = record.size, record.scan_id
    verdict = evaluated.verdict
    if job.operation is Operation.ENCRYPT:  # dry run
        outcome = Outcome.ENCRYPTED if verdict.releases else Outcome.QUARANTINED
        return _item(
            job,
            entry,
            attempt,
            outcome,
            verdict=verdict.value,
            processed=size,
            code="" if verdict.releases else verdict.value,
            message=f"dry run: would be {outcome.value}"
            + ("" if verdict.releases else f" ({_findings(evaluated)})"),
        )
    blocked = not verdict.releases
    return _item(
        job,
        entry,
        attempt,
        Outcome.SCANNED,
        scan_id=scan_id,
        verdict=verdict.value,
        processed=size,
        tally=Tally.FAILED if blocked else None,
        code=verdict.value if blocked else "",
        message=_findings(evaluated) if blocked else f"{verdict.value} under {evaluated.group.name}",
        action="an encrypt job would quarantine it; review the findings with `modelshield verdict`"
        if blocked
        else "",
    )


def _encrypted_object(
    jr: JobRuntime, job: Job, entry: ManifestEntry, attempt: int, current: inplace.Current
) -> JobItem:
    rt = jr.pipeline
    if not current.ours:
        if job.operation in (Operation.VERIFY, Operation.REKEY):
            return _failed(
                job,
                entry,
                attempt,
                "NOT_MODELSHIELD",
                "an encrypted message without ModelShield's metadata: not written by a job",
                "check where it came from; re-encrypt it from its plaintext",
            )
        return _item(
            job, entry, attempt, Outcome.ALREADY_ENCRYPTED, message="an AWS Encryption SDK message already"
        )
    sha = current.metadata.get(inplace.SHA256_META)
    if job.operation is Operation.VERIFY or (job.operation is Operation.ENCRYPT and not job.options.dry_run):
        try:
            context = inplace.verify_object(rt, entry.bucket, entry.key, current.version_id, sha)
        except ModelShieldError as exc:
            if job.operation is Operation.VERIFY:
                return _failed(
                    job,
                    entry,
                    attempt,
                    "INTEGRITY",
                    str(exc),
                    "restore this object from a backup or re-encrypt it from its plaintext",
                )
            raise
        if job.operation is Operation.VERIFY:
            return _item(
                job,
                entry,
                attempt,
                Outcome.VERIFIED,
                processed=current.size,
                message="every frame authenticated; plaintext sha256 matches its encryption context",
            )
        return _finish_encrypted(jr, job, entry, attempt, current, context)
    if job.operation is Operation.REKEY:
        return _rekey(jr, job, entry, attempt, current)
    return _item(job, entry, attempt, Outcome.ALREADY_ENCRYPTED, message="encrypted by ModelShield already")


def _finish_encrypted(
    jr: JobRuntime,
    job: Job,
    entry: ManifestEntry,
    attempt: int,
    current: inplace.Current,
    context: dict[str, str],
) -> JobItem:
    """An object a job already encrypted: finish what an interrupted worker left (plaintext versions)."""
    rt = jr.pipeline
    recorded = rt.artifacts.get(f"{entry.bucket}/{entry.key}", inplace.plaintext_version_of(context))
    leftovers = inplace.plaintext_versions(rt.s3, entry.bucket, entry.key, keep=current.version_id)
    if leftovers and (recorded is None or recorded.vault_version_id != current.version_id):
        # Killed between writing the ciphertext and recording it: discard it and start from the plaintext.
        rt.s3.delete_object(Bucket=entry.bucket, Key=entry.key, VersionId=current.version_id)
        return _operate(jr, job, entry.model_copy(update={"sniffed": True}), attempt)
    for version_id in leftovers:
        rt.s3.delete_object(Bucket=entry.bucket, Key=entry.key, VersionId=version_id)
    if leftovers:
        return _item(
            job,
            entry,
            attempt,
            Outcome.ENCRYPTED,
            new_version_id=current.version_id,
            message=f"finished an interrupted run: {len(leftovers)} plaintext version(s) removed",
        )
    return _item(job, entry, attempt, Outcome.ALREADY_ENCRYPTED, message="encrypted by ModelShield already")


def _rekey(jr: JobRuntime, job: Job, entry: ManifestEntry, attempt: int, current: inplace.Current) -> JobItem:
    rt = jr.pipeline
    context = inplace.recorded_context(rt.s3, entry.bucket, entry.key, current.version_id)
    artifact = rt.artifacts.get(f"{entry.bucket}/{entry.key}", inplace.plaintext_version_of(context))
    if artifact is None or artifact.vault_version_id != current.version_id:
        return _failed(
            job,
            entry,
            attempt,
            "NO_RECORD",
            "no artifact record points at this ciphertext version",
            "run a verify job; re-encrypt it from its plaintext if it fails",
        )
    result = jr.rotator().rotate_artifact(
        artifact,
        max_data_key_age_days=job.options.rekey_older_than_days,
        dry_run=job.options.dry_run,
        run_id=job.job_id,
    )
    if result is None:
        return _item(
            job,
            entry,
            attempt,
            Outcome.ALREADY_ENCRYPTED,
            message="already wrapped by the current key with a fresh data key",
        )
    note = ("dry run: would " if job.options.dry_run else "") + f"{result.action.value} to {result.to_key}"
    return _item(
        job,
        entry,
        attempt,
        Outcome.REKEYED,
        new_version_id=result.new_vault_version,
        processed=current.size,
        message=note,
    )


# -- helpers -----------------------------------------------------------------------------------------
def _item(
    job: Job,
    entry: ManifestEntry,
    attempt: int,
    outcome: Outcome,
    *,
    tally: Tally | None = None,
    code: str = "",
    message: str = "",
    action: str = "",
    scan_id: str | None = None,
    verdict: str | None = None,
    new_version_id: str | None = None,
    processed: int = 0,
) -> JobItem:
    return JobItem(
        job_id=job.job_id,
        bucket=entry.bucket,
        key=entry.key,
        version_id=entry.version_id,
        size=entry.size,
        outcome=outcome,
        tally=tally or tally_of(outcome),
        code=code,
        message=message[:2000],
        action=action,
        scan_id=scan_id,
        verdict=verdict,
        new_version_id=new_version_id,
        bytes_processed=processed,
        dry_run=job.options.dry_run,
        attempt=attempt,
        updated_at=utcnow(),
    )


def _failed(job: Job, entry: ManifestEntry, attempt: int, code: str, message: str, action: str) -> JobItem:
    return _item(job, entry, attempt, Outcome.FAILED, code=code, message=message, action=action)


def _findings(evaluated: Any) -> str:
    failed = [r for r in evaluated.evaluation.rules if r.status.value in ("FAIL", "ERROR")]
    parts = []
    for rule in failed[:3]:
        first = rule.findings[0].message if rule.findings else rule.message
        parts.append(f"{rule.rule.value} {rule.status.value}: {first}")
    return f"{evaluated.verdict.value}: " + "; ".join(parts) if parts else evaluated.verdict.value


def _code(exc: ModelShieldError) -> str:
    name = type(exc).__name__
    return {
        "IntegrityError": "INTEGRITY",
        "EnvelopeError": "INTEGRITY",
        "KeyAccessError": "KMS",
        "AccessDenied": "ACCESS_DENIED",
        "ArtifactNotFound": "GONE",
    }.get(name, name.upper())


def _action(exc: ModelShieldError) -> str:
    if "versioning" in str(exc):
        return "enable versioning on the repository bucket, then `modelshield jobs retry`"
    return "fix the cause above, then `modelshield jobs retry JOB_ID`"


def _raise_if_throttled(exc: ClientError) -> None:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if any(marker in code for marker in THROTTLE_MARKERS) or code in ("503", "ServiceUnavailable"):
        raise Throttled(f"{code}: {exc}") from None
