"""Load through the local stack: N uploads, every verdict accounted for, throughput over time.

`python benchmarks/load_bench.py --uploads 1000` starts the local stack in this process (moto server,
the real ScanFunction handler behind the SQS poller, exactly as `modelshield local up` runs it), uploads N
small models (one in ten malicious) as fast as S3 takes them, and waits until every upload has a verdict
or the queue is drained. It reports:
- verdicts per second per window of `--window` verdicts (by completion time) and the first vs the last
  window, the figure that shows whether the stack slows down as its buckets grow;
- peak memory of the process (stack + handler: ru_maxrss) and the RSS sampled over the run;
- records versus uploads: duplicates (more than one upload record for a version), lost (no record),
  ERROR verdicts, and the dead-letter queue's depth at the end.
Exit 1 if anything was lost or doubled, the DLQ is not empty, or the last window is slower than half the
first (the issue-11 acceptance bar). Numbers in docs/performance.md come from this command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelshield.local.samples import benign_checkpoint, malicious_pickle


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def body_for(n: int) -> bytes:
    return malicious_pickle(f"echo {n}") if n % 10 == 9 else benign_checkpoint(f"model-{n}")


def all_records(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "ProjectionExpression": "artifact_id, version_id, verdict, scanned_at, #t",
        "ExpressionAttributeNames": {"#t": "trigger"},
    }
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def count(table: Any) -> int:
    """Every item, page by page: a Scan counts at most 1 MB of items per call (about 550 scan records)."""
    total, kwargs = 0, {"Select": "COUNT"}
    while True:
        page = table.scan(**kwargs)
        total += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def run(uploads: int, window: int, timeout: float) -> dict[str, Any]:
    from modelshield import wiring
    from modelshield.local.stack import LocalStack

    state = tempfile.mkdtemp(prefix="modelshield-load-")
    os.environ["MODELSHIELD_STATE_DIR"] = state
    with LocalStack(quiet=True, persist_to=Path(state), snapshot_seconds=5.0) as stack:
        s3, sqs = stack.client("s3"), stack.client("sqs")
        ingest = stack.outputs["ingest_bucket"]
        dynamodb = wiring.dynamodb(**stack._endpoint())
        scans = dynamodb.Table(stack.env["SCANS_TABLE"])
        versions: dict[str, str] = {}
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(5):
                samples.append((time.monotonic(), rss_mib()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()

        def put(n: int) -> None:
            key = f"load/m{n:05d}.{'pkl' if n % 10 == 9 else 'pt'}"
            versions[key] = s3.put_object(Bucket=ingest, Key=key, Body=body_for(n))["VersionId"]

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(put, range(uploads)))
        uploaded_in = time.monotonic() - started
        deadline = started + timeout
        queue = stack.outputs["scan_queue_url"]
        idle = 0
        while time.monotonic() < deadline:
            time.sleep(5)
            # The queue's depth, not a count of the records: a Scan of the scans table every 5 s is O(records)
            # inside the stack being measured, and it slowed the last window of a 1,000-upload run.
            depth = queue_depth(sqs, queue)
            print(
                f"  {time.monotonic() - started:7.0f}s  in flight {depth}/{uploads}  rss {rss_mib():.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
            idle = idle + 1 if depth == 0 else 0
            if idle >= 2 and count(scans) >= uploads:
                break
        elapsed = time.monotonic() - started
        stop.set()
        records = all_records(scans)
        dlq = queue_depth(sqs, stack.outputs["dead_letter_queue_url"])
        errors = list(stack.errors)
        snapshots = stack._snapshotter
        snapshot_figures = {"taken": snapshots.taken, "longest_s": round(snapshots.longest_seconds, 2)}
    per_version = Counter(
        (r["artifact_id"], r["version_id"]) for r in records if r.get("trigger", "upload") == "upload"
    )
    wanted = {(f"{ingest}/{k}", v) for k, v in versions.items()}
    times = sorted(r["scanned_at"] for r in records)
    windows = []
    from datetime import datetime

    stamps = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in times]
    for start in range(0, len(stamps) - window + 1, window):
        span = stamps[start + window - 1] - stamps[start] or 1e-9
        windows.append(round(window / span, 2))
    return {
        "uploads": uploads,
        "uploaded_in_s": round(uploaded_in, 1),
        "elapsed_s": round(elapsed, 1),
        "records": len(records),
        "duplicates": sum(c - 1 for c in per_version.values() if c > 1),
        "lost": len(wanted - set(per_version)),
        "errors": sum(1 for r in records if r["verdict"] == "ERROR"),
        "blocked": sum(1 for r in records if r["verdict"] == "BLOCKED"),
        "dlq": dlq,
        "verdicts_per_s_by_window": windows,
        "window": window,
        "overall_verdicts_per_s": round(len(stamps) / ((stamps[-1] - stamps[0]) or 1e-9), 2) if stamps else 0,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mib_over_time": [round(r) for _, r in samples[:: max(1, len(samples) // 12)]],
        "snapshots": snapshot_figures,
        "poller_errors": errors[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--window", type=int, default=None, help="verdicts per throughput window")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    window = args.window or max(10, min(1000, args.uploads // 5))
    result = run(args.uploads, window, args.timeout)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    rates = result["verdicts_per_s_by_window"]
    ok = (
        result["lost"] == 0
        and result["duplicates"] == 0
        and result["dlq"] == 0
        and (len(rates) < 2 or rates[-1] >= rates[0] / 2)
    )
    print("PASS" if ok else "FAIL: lost, doubled, dead-lettered or slowing down")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
