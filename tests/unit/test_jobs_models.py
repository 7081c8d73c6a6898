"""Bulk jobs' pure parts: filters, tallies, the final status, the contract JSON and the progress line."""

from __future__ import annotations

import io

import pytest
from modelshield.cli.commands_jobs import exit_code, job_bar, show_progress
from modelshield.errors import UsageError
from modelshield.jobs.discover import is_model_candidate
from modelshield.jobs.models import (
    Counts,
    Filters,
    Job,
    JobItem,
    JobStatus,
    Operation,
    Options,
    Outcome,
    Source,
    Tally,
    tally_of,
)
from modelshield.jobs.settle import decide, errors_csv, left_in_plaintext
from modelshield.local.samples import benign_checkpoint, malicious_pickle
from modelshield.models import utcnow


def job(**options: object) -> Job:
    return Job(
        job_id="job-1",
        operation="encrypt",
        source=Source.parse("s3://repo/models/"),
        options=Options(**options),
        requester="me",
        created_at=utcnow(),
    )


def test_filters_match_the_key_its_path_under_the_prefix_or_its_name_and_bound_the_size() -> None:
    filters = Filters(include=["*.pt"], exclude=["*/tmp/*"], min_size=1, max_size=100)
    assert filters.accepts("models/a/b.pt", 10, "models/")
    assert not filters.accepts("models/a/tmp/b.pt", 10, "models/")
    assert not filters.accepts("models/a/b.bin", 10, "models/")
    assert not filters.accepts("models/a/b.pt", 0, "models/") and not filters.accepts("models/a/b.pt", 101)


def test_a_source_is_a_bucket_and_prefix_or_an_inventory_manifest_and_nothing_else() -> None:
    assert Source.parse("s3://b/p/").uri == "s3://b/p/" and not Source.parse("s3://b/p/").inventory
    assert Source.parse("s3://b/inv/manifest.json").inventory
    with pytest.raises(UsageError):
        Source.parse("b/p")


def test_outcomes_land_in_the_counts_the_issue_names() -> None:
    assert tally_of(Outcome.ENCRYPTED) is Tally.SUCCEEDED and tally_of(Outcome.VERIFIED) is Tally.SUCCEEDED
    assert tally_of(Outcome.QUARANTINED) is Tally.FAILED and tally_of(Outcome.FAILED) is Tally.FAILED
    for skipped in (Outcome.ALREADY_ENCRYPTED, Outcome.NOT_A_MODEL, Outcome.GONE):
        assert tally_of(skipped) is Tally.SKIPPED


def test_content_not_the_name_decides_what_is_a_model() -> None:
    assert is_model_candidate(benign_checkpoint()[:4096], "weights.txt")
    assert is_model_candidate(malicious_pickle(), "notes.md")
    assert not is_model_candidate(b'{"lr": 0.1}', "model.pt")
    assert not is_model_candidate(b"", "model.pt")
    assert is_model_candidate(b"\x00\xffunknown bytes", "model.bin")  # kept: it will fail closed
    assert not is_model_candidate(b"\x00\xffunknown bytes", "image.png")


@pytest.mark.parametrize(
    ("counts", "hard", "tolerated", "status"),
    [
        (Counts(total=10, succeeded=10), 0, 0.0, JobStatus.SUCCEEDED),
        (Counts(total=10, succeeded=8, failed=2), 0, 0.0, JobStatus.COMPLETED_WITH_FAILURES),  # quarantined
        (Counts(total=10, succeeded=9, failed=1), 1, 0.0, JobStatus.FAILED),
        (Counts(total=10, succeeded=9, failed=1), 1, 20.0, JobStatus.COMPLETED_WITH_FAILURES),
        (Counts(total=10, succeeded=5, pending=5), 0, 0.0, JobStatus.FAILED),
    ],
)
def test_the_final_status_comes_from_the_recounted_items(
    counts: Counts, hard: int, tolerated: float, status: JobStatus
) -> None:
    assert decide(job(tolerated_failure_percent=tolerated), counts, hard, None)[0] is status


def test_a_cancelled_job_ends_cancelled_and_an_engine_failure_before_discovery_fails_it() -> None:
    cancelling = job().model_copy(update={"status": JobStatus.CANCELLING})
    assert decide(cancelling, Counts(total=3, pending=3), 0, None)[0] is JobStatus.CANCELLED
    status, message = decide(job(), Counts(), 0, "ModelShield.StepFailed: AccessDenied")
    assert status is JobStatus.FAILED and "AccessDenied" in message


def test_the_status_json_has_exactly_the_contract_keys_and_exit_codes_follow_the_status() -> None:
    public = job().public()
    keys = "job_id operation source status counts bytes started_at finished_at report_uri"
    assert set(public) == set(keys.split())
    assert set(public["counts"]) == {"total", "succeeded", "failed", "skipped", "pending"}
    assert set(public["bytes"]) == {"total", "processed"}
    assert exit_code(job().model_copy(update={"status": JobStatus.SUCCEEDED})) == 0
    assert exit_code(job().model_copy(update={"status": JobStatus.COMPLETED_WITH_FAILURES})) == 1


def test_the_error_csv_has_the_json_fields_as_columns() -> None:
    document = {"job_id": "j", "errors": [{"bucket": "b", "key": "k,1", "version_id": None, "code": "X",
                                           "message": "m", "action": "a"}]}  # fmt: skip
    assert errors_csv(document) == 'bucket,key,version_id,code,message,action\nb,"k,1",,X,m,a\n'


def test_the_progress_line_shows_items_bytes_rate_and_status() -> None:
    # Given a running job with two of four items finished
    running = job().model_copy(
        update={"status": JobStatus.RUNNING, "counts": Counts(total=4, succeeded=1, skipped=1, pending=2)}
    )
    stream = io.StringIO()
    bar = job_bar(enabled=True, stream=stream)

    # When its progress is shown
    show_progress(bar, running)

    # Then the shared bar shows the status, half done, the items and their rate, and the bytes
    line = bar.render()
    assert "running" in line and "50.0%" in line and "2 / 4 items" in line and "items/s" in line
    assert "B/" in line
    assert stream.getvalue().startswith("\r")


@pytest.mark.parametrize(
    ("operation", "outcome", "code", "dry_run", "left"),
    [
        (Operation.SCAN, Outcome.SCANNED, "", False, True),  # scanned only: still plaintext
        (Operation.SCAN, Outcome.NOT_A_MODEL, "", False, False),
        (Operation.ENCRYPT, Outcome.ENCRYPTED, "", False, False),
        (Operation.ENCRYPT, Outcome.QUARANTINED, "BLOCKED", False, False),  # its plaintext was removed
        (Operation.ENCRYPT, Outcome.ENCRYPTED, "", True, True),  # a dry run changed nothing
        (Operation.ENCRYPT, Outcome.QUARANTINED, "BLOCKED", True, True),
        (Operation.ENCRYPT, Outcome.FAILED, "ERROR", False, True),  # nothing removed before it is verified
        (Operation.ENCRYPT, Outcome.FAILED, "NOT_MODELSHIELD", False, False),  # someone else's ciphertext
        (Operation.VERIFY, Outcome.FAILED, "NOT_ENCRYPTED", False, True),
        (Operation.VERIFY, Outcome.FAILED, "INTEGRITY", False, False),
        (Operation.REKEY, Outcome.REKEYED, "", False, False),
    ],
)
def test_a_job_counts_the_plaintext_models_it_left_as_they_were(
    operation: Operation, outcome: Outcome, code: str, dry_run: bool, left: bool
) -> None:
    # Given a job and one of its item records, Then the settle step's plaintext count includes it or not
    job = Job(
        job_id="j", operation=operation, source=Source(bucket="repo"), requester="alice", created_at=utcnow()
    )
    item = JobItem(
        job_id="j", bucket="repo", key="m.pt", outcome=outcome, tally=tally_of(outcome), code=code,
        dry_run=dry_run, updated_at=utcnow(),
    )  # fmt: skip
    assert left_in_plaintext(job, item) is left
