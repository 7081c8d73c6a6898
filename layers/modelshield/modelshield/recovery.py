"""The last attempt: an event that keeps failing ends as a recorded ERROR verdict, not a silent DLQ entry.

SQS retries a failed scan until the message's receive count reaches the queue's maxReceiveCount, then
moves it to the dead-letter queue. The attempt that reaches that count (passed in from the SQS record's
`ApproximateReceiveCount`) records an ERROR verdict saying what failed and what to do, tags the object
(fail closed), emits the `ScanFailedAfterRetries` metric the alarm watches, and still fails the message,
so it lands in the DLQ where `modelshield dlq redrive` finds it once the cause is fixed. If even the ERROR
cannot be recorded (the scans table is the failure), the log line and the DLQ are what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from modelshield.events import ObjectEvent
from modelshield.models import ArtifactRef
from modelshield.observability import logger, metrics

if TYPE_CHECKING:
    from modelshield.pipeline import Runtime

FAILED_METRIC = "ScanFailedAfterRetries"

# error code (or a word in it) -> what to do
_ADVICE: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("Disabled", "KMSInvalidState", "KeyUnavailable"),
        "enable the KMS key (or point the group at an enabled key)",
    ),
    (("NotFoundException", "NoSuchKey"), "check the KMS key id or alias the group names"),
    (("NoSuchBucket",), "the bucket is missing: redeploy the stack (template.yaml) or fix its name"),
    (("ResourceNotFound",), "a DynamoDB table is missing: redeploy the stack (template.yaml)"),
    (
        ("AccessDenied", "Forbidden", "UnauthorizedOperation"),
        "grant the ScanFunction role the call (template.yaml)",
    ),
    (
        ("Throttl", "ProvisionedThroughputExceeded", "RequestLimitExceeded", "SlowDown", "TooManyRequests"),
        "throttled after retries: raise the service quota or lower the ScanFunction's concurrency",
    ),
)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(what failed, what to do) for an exception the pipeline could not get past."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        what = f"{exc.operation_name} failed: {code}: {error.get('Message', '')}".rstrip(": ")
    else:
        code = type(exc).__name__
        what = f"{code}: {exc}"
    for words, advice in _ADVICE:
        if any(word.lower() in f"{code} {what}".lower() for word in words):
            return what, advice
    if isinstance(exc, BotoCoreError):
        return what, "check the network path to AWS (endpoint, VPC, credentials)"
    return what, "see the ScanFunction's log for this artifact"


def record_final_failure(rt: Runtime, event: ObjectEvent, exc: BaseException, *, attempts: int) -> None:
    """Record an ERROR verdict for `event` after its last attempt failed with `exc` (best effort)."""
    from modelshield.pipeline import attempt_scan_id, error_record, resolve_version, tag_verdict

    if not event.version_id:
        try:
            event = resolve_version(rt.s3, event)
        except Exception:  # noqa: S110 - S3 may be the failure: record under "unknown"
            pass
    ref = ArtifactRef(bucket=event.bucket, key=event.key, version_id=event.version_id)
    what, advice = describe_failure(exc)
    message = (
        f"could not scan {ref.uri} (version {ref.version_id or 'unknown'}) after {attempts} attempts: "
        f"{what}. It was not released. To do: {advice}, then run `modelshield dlq redrive` to scan it again."
    )
    logger.error(message, extra={"attempts": attempts, "error": what})
    metrics.add_metric(name=FAILED_METRIC, unit=MetricUnit.Count, value=1)
    scan_id = attempt_scan_id(ref, trigger=event.trigger, request_id=event.request_id)
    try:
        state = rt.artifacts.get(ref.artifact_id, ref.version_id) if ref.version_id else None
        if state is not None and state.latest_scan_ref.endswith(f"#{scan_id}"):
            return  # this attempt's verdict is recorded; only a later step failed (logged above)
    except (ClientError, BotoCoreError):
        pass  # the artifacts table may be the failure: record the ERROR anyway
    record = error_record(ref, message, trigger=event.trigger, etag=event.etag)
    try:
        rt.scans.append(record)
    except Exception as store_exc:
        logger.error(
            "could not record the ERROR verdict either; the message goes to the dead-letter queue",
            extra={"error": str(store_exc)},
        )
        return
    try:
        tag_verdict(rt.s3, ref, record.verdict, record.scan_id)
    except Exception as tag_exc:
        logger.error("could not tag the ERROR verdict", extra={"error": str(tag_exc)})
    if rt.publisher is not None:  # recorded: announce it like any verdict (never raises)
        rt.publisher.publish(record)


@contextmanager
def last_attempt_recorded(rt: Runtime, event: ObjectEvent, *, attempt: int) -> Iterator[None]:
    """Run the block; if it fails on the queue's last attempt, record the ERROR verdict, then re-raise
    (the message still goes to the DLQ, for `modelshield dlq redrive`)."""
    try:
        yield
    except Exception as exc:
        if attempt >= rt.settings.max_receive_count:
            record_final_failure(rt, event, exc, attempts=attempt)
        raise
