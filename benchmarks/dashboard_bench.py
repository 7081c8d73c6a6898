"""metrics.json (and the attempts and quarantine pages) latency as the tables grow, under in-process moto.

    python benchmarks/dashboard_bench.py                         # 1k/10k, 10k/100k, 100k/1M
    python benchmarks/dashboard_bench.py --sizes 1000:10000      # artifacts:audit records

The tables are created from template.yaml and seeded straight into moto's in-process DynamoDB backend
(its own put_item, skipping the HTTP round trip that would make a million items take hours): artifacts
and their scans, and a hash chain of audit records with one in ten a decryption attempt. The counters
are what MetricsFunction would have written, computed by folding the same delta functions over the
seeded items (counters.py), so the dashboard reads exactly what it reads in production. Each case runs
in its own process; a latency is the median of several requests after one warm-up, through the real
Dashboard service. `naive_scan_ms` is the alternative the counters replace: one full scan of the
artifacts table and the audit chain (what computing the tiles from the tables on each request costs).

What moto is not: DynamoDB's Query on an index is a seek, moto's walks every item of the table, so the
attempts page's time under moto grows with the table while DynamoDB's does not. metrics.json does not
read the big tables at all, which is the point of the counters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = ["1000:10000", "10000:100000", "100000:1000000"]
NAIVE_LIMIT = 120_000


def run_case(artifacts: int, audit: int, repeats: int) -> dict[str, Any]:
    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "POWERTOOLS_TRACE_DISABLED": "true"})  # fmt: skip
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from modelshield.audit import ATTEMPT_TAG, GENESIS_HASH, AuditRecord, Decision
    from modelshield.config import DashboardSettings, GroupsSource
    from modelshield.dashboard.chain import ChainState
    from modelshield.dashboard.counters import Delta, artifact_delta, audit_delta, scan_delta
    from modelshield.dashboard.service import Dashboard
    from modelshield.local.template import create_template_table
    from modelshield.store.audit import _record_to_item
    from modelshield.store.metrics import MetricsStore
    from moto import mock_aws

    with mock_aws():
        ddb = boto3.client("dynamodb")
        names = {}
        for logical in (
            "ArtifactsTable",
            "ScansTable",
            "AuditTable",
            "AccessTable",
            "GroupsTable",
            "MetricsTable",
        ):
            names[logical] = logical.lower()
            create_template_table(ddb, logical, logical.lower(), ROOT / "template.yaml")
        kms = boto3.client("kms")
        key_arn = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
        kms.enable_key_rotation(KeyId=key_arn)
        resource = boto3.resource("dynamodb")
        now = datetime.now(UTC)
        counters = Delta()
        seed_started = time.perf_counter()

        from boto3.dynamodb.types import TypeSerializer
        from moto.dynamodb.models import dynamodb_backends
        from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
        from moto.dynamodb.models.dynamo_type import Item as MotoItem

        backend = dynamodb_backends["123456789012"]["us-east-1"]
        serialize = TypeSerializer().serialize

        class Writer:
            """Items straight into moto's table storage. moto's own put_item re-sums the item's size on
            every attribute it stores (quadratic per item, ~550 items/s here); the seeded items are small
            and well-formed, so that check and the condition machinery are skipped."""

            def __init__(self, table: str) -> None:
                self.table = backend.get_table(table)

            def put_item(self, Item: dict[str, Any]) -> None:
                attrs = LimitedSizeDict()
                for name, value in Item.items():
                    dict.__setitem__(attrs, name, DynamoType(serialize(value)))
                table = self.table
                hash_key = attrs[table.hash_key_attr]
                range_key = attrs[table.range_key_attr] if table.range_key_attr else None
                item = MotoItem.__new__(MotoItem)
                item.hash_key, item.range_key, item.attrs = hash_key, range_key, attrs
                if range_key is not None:
                    table.items[hash_key][range_key] = item
                else:
                    table.items[hash_key] = item

        arts, scans = Writer(names["ArtifactsTable"]), Writer(names["ScansTable"])
        for i in range(artifacts):
            quarantined = i % 20 == 0
            updated = (now - timedelta(minutes=i)).isoformat()
            scan_ref = f"{updated}#v{i}#s{i}"
            item = {
                "artifact_id": f"ingest/models/m{i:07d}.pt", "version_id": f"v{i}", "bucket": "ingest",
                "key": f"models/m{i:07d}.pt", "sha256": f"{i:064x}", "size": 1000 + i,
                "format": "pytorch-zip",
                "group": ("S3-Production", "HuggingFace-Research", "default")[i % 3],
                "verdict": "BLOCKED" if quarantined else "ALLOWED",
                "encryption_state": "QUARANTINED" if quarantined else "ENCRYPTED",
                "ciphertext_size": 1100 + i, "wrapping_key_arn": key_arn,
                "data_key_created_at": (now - timedelta(days=i % 400)).isoformat(),
                "latest_scan_ref": scan_ref, "updated_at": updated, "revision": 1,
            }  # fmt: skip
            arts.put_item(Item=item)
            counters.merge(artifact_delta(None, item, changed_at=now - timedelta(days=i % 60)))
            scan = {
                "artifact_id": item["artifact_id"], "scan_ref": scan_ref, "verdict": item["verdict"],
                "trigger": "upload", "scanned_at": updated,
                "rules": [
                    {"rule": "MS-CODE-EXEC", "status": "FAIL" if quarantined else "PASS", "blocking": True}
                ],
            }  # fmt: skip
            scans.put_item(Item=scan)
            counters.merge(scan_delta(scan))

        prev, record = GENESIS_HASH, None
        batch = Writer(names["AuditTable"])
        for seq in range(1, audit + 1):
            attempt = seq % 10 == 0
            record = AuditRecord(
                seq=seq, event_id=f"e{seq}", at=now - timedelta(seconds=audit - seq),
                action="artifact.decrypt" if attempt else "rotation.rewrap",
                decision=Decision.DENIED if attempt and seq % 30 == 0 else Decision.ALLOWED,
                principal=f"arn:aws:sts::123456789012:assumed-role/Svc/{seq % 50}",
                artifact_id=f"ingest/models/m{seq % max(artifacts, 1):07d}.pt", prev_hash=prev,
            ).sealed()  # fmt: skip
            prev = record.hash
            item = _record_to_item(record)
            assert attempt == (item.get("attempt") == ATTEMPT_TAG)
            batch.put_item(Item=item)
            counters.merge(audit_delta(item))
        batch.put_item(Item={"pk": "head", "seq": 0, "head_seq": audit, "head_hash": prev})
        metrics_store = MetricsStore(names["MetricsTable"], resource)
        metrics_store.put_counters(counters.nonzero())
        metrics_store.put_chain_state(ChainState(seq=audit, hash=prev, records=audit))
        seed_s = time.perf_counter() - seed_started

        dashboard = Dashboard(
            DashboardSettings(
                metrics_table=names["MetricsTable"], audit_table=names["AuditTable"],
                access_table=names["AccessTable"], artifacts_table=names["ArtifactsTable"],
                scans_table=names["ScansTable"], groups=GroupsSource(table=names["GroupsTable"]),
                kms_key_id=key_arn,
            ),
            dynamodb=resource, kms=kms,
        )  # fmt: skip

        def timed(fn: Any) -> tuple[float, Any]:
            fn()  # warm-up
            samples, result = [], None
            for _ in range(repeats):
                started = time.perf_counter()
                result = fn()
                samples.append(time.perf_counter() - started)
            return statistics.median(samples) * 1000, result

        metrics_ms, document = timed(dashboard.metrics)
        assert document["encrypted"]["objects"] + document["quarantined"]["objects"] == artifacts
        assert document["audit_chain"]["records"] == audit and document["audit_chain"]["intact"]
        attempts_ms, page = timed(lambda: dashboard.attempts(limit=25))
        denied_ms, _ = timed(lambda: dashboard.attempts(outcome="DENIED", limit=25))
        quarantine_ms, _ = timed(lambda: dashboard.quarantine(limit=25))
        naive_ms: float | None = None
        if artifacts + audit <= NAIVE_LIMIT:  # beyond this the full scan alone takes many minutes here
            started = time.perf_counter()
            for table, kwargs in ((names["ArtifactsTable"], {}), (names["AuditTable"], {})):
                while True:
                    page_ = resource.Table(table).scan(**kwargs)
                    if "LastEvaluatedKey" not in page_:
                        break
                    kwargs["ExclusiveStartKey"] = page_["LastEvaluatedKey"]
            naive_ms = (time.perf_counter() - started) * 1000
        counter_items = sum(
            1 for pk in ("totals", "capacity", "dkage", "hourly") for _ in metrics_store.partition(pk)
        )
        return {
            "artifacts": artifacts, "audit_records": audit, "seed_s": round(seed_s, 1),
            "counter_items": counter_items, "metrics_json_ms": round(metrics_ms, 1),
            "attempts_page_ms": round(attempts_ms, 1), "attempts_denied_ms": round(denied_ms, 1),
            "quarantine_page_ms": round(quarantine_ms, 1), "attempt_rows": len(page["attempts"]),
            "naive_scan_ms": None if naive_ms is None else round(naive_ms),
        }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="ARTIFACTS:AUDIT_RECORDS ...")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        artifacts, audit = (int(v) for v in args.case.split(":"))
        print(json.dumps(run_case(artifacts, audit, args.repeats)))
        return 0
    header = ("artifacts", "audit_records", "counter_items", "metrics_json_ms", "attempts_page_ms",
              "attempts_denied_ms", "quarantine_page_ms", "naive_scan_ms", "seed_s")  # fmt: skip
    print(" | ".join(header))
    for size in args.sizes:
        result = subprocess.run(
            [sys.executable, __file__, "--case", size, "--repeats", str(args.repeats)],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            print(f"{size}: failed\n{result.stderr[-2000:]}")
            return 1
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(" | ".join(str(row[h]) for h in header), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
