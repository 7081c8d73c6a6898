"""Bulk-job throughput on the local stack: items per second against item count and worker concurrency.

Each case starts a fresh local stack (moto server, the template's state machine on moto's Step Functions
interpreter, N JobWorker pollers running the real handler), seeds a repository bucket across nested
prefixes, runs one job through `JobService` (what the CLI and API call) and times create → finished.
What it measures is the local engine plus the worker code on moto, not AWS: see docs/jobs.md for how
the numbers translate to Lambda.

    python benchmarks/jobs_bench.py            # the table in docs/jobs.md (about 20 minutes here)
    python benchmarks/jobs_bench.py --quick    # small sizes, about a minute

Every case asserts exact counts (total, succeeded = the models, skipped = the configs, failed 0, pending 0,
and the outcome of every item), so a number is only printed for a job that did all of its work. Each row
carries the 1-minute load average before and after it: this machine is shared, and a busy neighbour
shows up in the time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ENGINEER = "arn:aws:sts::123456789012:assumed-role/ModelShieldSecurityEngineer/bench"


def run_case(objects: int, models: int, pollers: int, operation: str) -> dict[str, float]:
    from modelshield import wiring
    from modelshield.local.samples import benign_checkpoint
    from modelshield.local.stack import LocalStack

    os.environ["MODELSHIELD_STATE_DIR"] = tempfile.mkdtemp(prefix="jobs-bench-")
    with LocalStack(quiet=True, max_pollers=pollers) as stack:
        s3 = stack.client("s3")
        s3.create_bucket(Bucket="bench-repo")
        s3.put_bucket_versioning(Bucket="bench-repo", VersioningConfiguration={"Status": "Enabled"})
        model = benign_checkpoint("bench")
        seeded = [(f"r/team-{n % 7}/run-{n % 13}/model-{n}.pt", model) for n in range(models)]
        seeded += [(f"r/team-{n % 7}/run-{n % 13}/cfg-{n}.json", b"{}") for n in range(objects - models)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda o: s3.put_object(Bucket="bench-repo", Key=o[0], Body=o[1]), seeded))
        service = wiring.job_service()
        started = time.monotonic()
        job = service.create(principal=ENGINEER, operation=operation, source="s3://bench-repo/r/")
        while not (job := service.get(job.job_id)).status.finished:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        skipped = objects - models
        expected = {"total": objects, "succeeded": models, "failed": 0, "skipped": skipped, "pending": 0}
        assert job.public()["counts"] == expected, (job.public()["counts"], expected)
        done = "ENCRYPTED" if operation == "encrypt" else "SCANNED"
        outcomes = {done: models, **({"NOT_A_MODEL": objects - models} if objects > models else {})}
        assert job.outcomes == outcomes, (job.outcomes, outcomes)
        return {"seconds": elapsed, "items_per_s": objects / elapsed, "models_per_s": models / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        cases = [(100, 20, 2, "scan"), (1200, 40, 2, "scan"), (60, 60, 1, "encrypt"), (60, 60, 2, "encrypt")]
    else:
        cases = [
            (200, 100, 2, "scan"),
            (1200, 100, 2, "scan"),
            (3000, 300, 1, "scan"),
            (3000, 300, 2, "scan"),
            (3000, 300, 4, "scan"),
            (200, 200, 1, "encrypt"),
            (200, 200, 2, "encrypt"),
            (200, 200, 4, "encrypt"),
            (3000, 300, 2, "encrypt"),
        ]
    header = ("operation", "objects", "models", "pollers", "seconds", "objects/s", "models/s", "load")
    print("{:9} {:>7} {:>6} {:>7} {:>8} {:>9} {:>8}  {}".format(*header))
    for objects, models, pollers, operation in cases:
        before = os.getloadavg()[0]
        r = run_case(objects, models, pollers, operation)
        after = os.getloadavg()[0]
        print(
            f"{operation:9} {objects:7d} {models:6d} {pollers:7d} {r['seconds']:8.1f} "
            f"{r['items_per_s']:9.1f} {r['models_per_s']:8.1f}  {before:.2f} -> {after:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
