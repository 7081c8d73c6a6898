"""`modelshield jobs create|status|errors|list|cancel|retry`: bulk jobs over existing model repositories.

The contract scripts rely on (issue 12): `create` prints the job id (or, with `--format json`, the status
JSON; with `--wait --format json`, that JSON once the job ends). Exit codes: 0 when every item succeeded
or was skipped, 1 when the job finished with failed or quarantined items (or failed, or was cancelled),
2 on usage or I/O errors. With `--wait` on a terminal, a live progress bar goes to stderr; otherwise
nothing but the result is printed. The caller's principal comes from STS, never from a flag.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.errors import StackNotRunning
from modelshield.jobs.models import Filters, Job, JobStatus, Operation, Options
from modelshield.jobs.settle import errors_csv
from modelshield.progress import Progress, human_bytes

POLL_SECONDS = 0.5


def register(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="bulk jobs over existing repositories: scan, encrypt, rekey, verify")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    jobs_sub.required = True

    create = jobs_sub.add_parser("create", help="start a job over s3://BUCKET/PREFIX")
    create.add_argument(
        "--source", required=True, help="s3://BUCKET/PREFIX (or an S3 Inventory manifest.json)"
    )
    create.add_argument("--operation", required=True, choices=[o.value for o in Operation])
    create.add_argument("--include", action="append", default=[], metavar="GLOB", help="only keys matching")
    create.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip keys matching")
    create.add_argument("--max-concurrency", type=int, default=10, metavar="N")
    create.add_argument("--tolerated-failure-percent", type=float, default=0.0, metavar="P")
    create.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    create.add_argument("--wait", action="store_true", help="wait for the end (progress bar on a terminal)")
    add_format_flag(create)
    create.set_defaults(handler=cmd_create)

    status = jobs_sub.add_parser("status", help="a job's status, counts and bytes")
    status.add_argument("job_id")
    status.add_argument("--watch", action="store_true", help="follow it until it ends")
    add_format_flag(status)
    status.set_defaults(handler=cmd_status)

    errors = jobs_sub.add_parser("errors", help="the items that failed, why, and what to do")
    errors.add_argument("job_id")
    add_format_flag(errors, ("table", "json", "csv"))
    errors.set_defaults(handler=cmd_errors)

    lst = jobs_sub.add_parser("list", help="jobs, newest first")
    add_format_flag(lst)
    lst.set_defaults(handler=cmd_list)

    for name, help_text, handler in (
        ("cancel", "stop starting new items", cmd_cancel),
        ("retry", "run the failed items again", cmd_retry),
    ):
        action = jobs_sub.add_parser(name, help=help_text)
        action.add_argument("job_id")
        add_format_flag(action)
        action.set_defaults(handler=handler)


def _service() -> Any:
    from modelshield import wiring
    from modelshield.errors import ConfigError
    from modelshield.local.stack import use_local_stack_if_running

    use_local_stack_if_running()
    try:
        return wiring.job_service()
    except ConfigError as exc:
        raise StackNotRunning(
            f"no stack to talk to ({exc}): start one with `modelshield local up`, or set JOBS_TABLE, "
            "REPORTS_BUCKET, JOBS_STATE_MACHINE_ARN and AUDIT_TABLE (and credentials) for a deployed stack"
        ) from None


def _principal() -> str:
    from modelshield import wiring

    return wiring.caller_arn()


def exit_code(job: Job) -> int:
    if job.status is JobStatus.SUCCEEDED:
        return 0
    return 1


def cmd_create(args: Any) -> int:
    service = _service()
    job = service.create(
        principal=_principal(),
        operation=args.operation,
        source=args.source,
        filters=Filters(include=args.include, exclude=args.exclude),
        options=Options(
            dry_run=args.dry_run,
            max_concurrency=args.max_concurrency,
            tolerated_failure_percent=args.tolerated_failure_percent,
        ),
    )
    if not args.wait:
        if args.format == "json":
            print_json(job.public())
        else:
            print(job.job_id)
        return 0
    if args.format != "json":
        print(job.job_id, flush=True)
    job = wait_for(service, job.job_id)
    _show(job, args.format)
    return exit_code(job)


def cmd_status(args: Any) -> int:
    service = _service()
    job = wait_for(service, args.job_id) if args.watch else service.get(args.job_id)
    _show(job, args.format)
    return exit_code(job) if args.watch else 0


def cmd_errors(args: Any) -> int:
    document = _service().errors(args.job_id)
    if args.format == "json":
        print_json(document)
    elif args.format == "csv":
        sys.stdout.write(errors_csv(document))
    else:
        rows = [[e["key"], e["code"], e["message"][:100], e["action"][:80]] for e in document["errors"]]
        print_table(["KEY", "CODE", "WHY", "WHAT TO DO"], rows)
    return 0


def cmd_list(args: Any) -> int:
    jobs = _service().list()
    if args.format == "json":
        print_json({"jobs": [j.public() for j in jobs]})
        return 0
    print_table(
        ["JOB", "OPERATION", "SOURCE", "STATUS", "TOTAL", "OK", "FAILED", "SKIPPED", "PENDING", "CREATED"],
        [
            [
                j.job_id,
                j.operation.value,
                j.source.uri,
                j.status.value,
                j.counts.total,
                j.counts.succeeded,
                j.counts.failed,
                j.counts.skipped,
                j.counts.pending,
                j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for j in jobs
        ],
    )
    return 0


def cmd_cancel(args: Any) -> int:
    job = _service().cancel(args.job_id, principal=_principal())
    _show(job, args.format)
    return 0


def cmd_retry(args: Any) -> int:
    job = _service().retry(args.job_id, principal=_principal())
    _show(job, args.format)
    return 0


# -- waiting and showing -----------------------------------------------------------------------------
def wait_for(service: Any, job_id: str, *, timeout: float | None = None) -> Job:
    """Poll the job record (the source of truth) until it ends; a progress bar on an interactive stderr."""
    bar = job_bar()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = service.get(job_id)
        show_progress(bar, job)
        if job.status.finished:
            bar.close()
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(POLL_SECONDS)


def job_bar(*, enabled: bool | None = None, stream: Any = None) -> Progress:
    """The shared progress bar (modelshield.progress), counting a job's finished items."""
    return Progress(None, phase="pending", unit="items", enabled=enabled, stream=stream)


def show_progress(bar: Progress, job: Job) -> None:
    """Redraw `bar` for `job`: `encrypt 1.2 MiB/3.4 MiB running [####..] 40.0% 120 / 300 items 15 items/s`"""
    counts = job.counts
    done = counts.succeeded + counts.failed + counts.skipped
    bar.label = f"{job.operation.value} {human_bytes(job.bytes.processed)}/{human_bytes(job.bytes.total)}"
    status = job.status.value.lower()
    if status != bar.current_phase:
        bar.phase(status, reset=False)
    bar.set(done, max(counts.total, done))


def _show(job: Job, fmt: str) -> None:
    if fmt == "json":
        print_json(job.public())
        return
    counts = job.counts
    print(f"job {job.job_id}: {job.operation.value} {job.source.uri} -> {job.status.value}")
    print(
        f"  items: {counts.total} total, {counts.succeeded} succeeded, {counts.failed} failed, "
        f"{counts.skipped} skipped, {counts.pending} pending"
    )
    if job.outcomes:
        print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(job.outcomes.items())))
    print(f"  bytes: {job.bytes.processed} of {job.bytes.total}")
    if job.message:
        print(f"  {job.message}")
    if job.report_uri:
        print(f"  report: {job.report_uri}")


# -- `make demo`: an encrypt job over a small seeded repository ---------------------------------------
def demo_bulk_job(stack: Any) -> bool:
    """Seed a repository (a few dozen models, some malicious, one corrupt), encrypt it in place, and show
    the progress, the final counts and the error report. True when the counts are the expected ones."""
    from modelshield import wiring
    from modelshield.local.samples import benign_checkpoint, malicious_pickle
    from modelshield.observability import logger

    logger.setLevel("WARNING")  # the worker's per-item log lines would break the progress bar
    s3 = stack.client("s3")
    bucket = "demo-model-repository"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    seeded: dict[str, bytes] = {
        f"teams/t{n % 4}/run-{n}/model.pt": benign_checkpoint(f"m{n}") for n in range(24)
    }
    seeded |= {f"teams/t{n}/contrib/helper-{n}.pkl": malicious_pickle(f"echo {n}") for n in range(4)}
    seeded["teams/t0/broken/checkpoint.pt"] = benign_checkpoint("broken")[:300]  # truncated: corrupt
    seeded["teams/README.md"] = b"# our models\n"
    for key, body in seeded.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    print(
        f"\nbulk job: encrypt s3://{bucket}/teams/ in place ({len(seeded)} objects: "
        "24 models, 4 malicious, 1 corrupt, 1 README)"
    )
    engineer = stack.client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/ModelShieldSecurityEngineer", RoleSessionName="demo"
    )["AssumedRoleUser"]["Arn"]
    service = wiring.job_service()
    job = service.create(principal=engineer, operation="encrypt", source=f"s3://{bucket}/teams/")
    bar = job_bar(enabled=True, stream=sys.stdout)
    while not (job := service.get(job.job_id)).status.finished:
        show_progress(bar, job)
        time.sleep(POLL_SECONDS)
    show_progress(bar, job)
    bar.close(final=bar.render())
    _show(job, "table")
    errors = service.errors(job.job_id)["errors"]
    print_table(["KEY", "CODE", "WHY"], [[e["key"], e["code"], e["message"][:90]] for e in errors])
    return job.counts.model_dump() == {"total": 30, "succeeded": 24, "failed": 5, "skipped": 1, "pending": 0}
