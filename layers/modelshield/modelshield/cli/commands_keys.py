"""`modelshield keys status|rotate`: key compliance, and the rotation run executed locally.

`keys rotate` runs exactly the domain function the RotateFunction runs on its schedule, without a time
limit; `--dry-run` reports what it would re-wrap, re-key and retire without changing anything.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.errors import ConfigError


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="KMS key compliance and the key-rotation run")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True

    status = keys_sub.add_parser(
        "status", help="per key: groups, rotation, artifacts wrapped, oldest data key"
    )
    add_format_flag(status)
    status.set_defaults(handler=cmd_status)

    rotate = keys_sub.add_parser("rotate", help="re-wrap, re-key and retire expired grants now")
    rotate.add_argument("--dry-run", action="store_true", help="report what would be done; change nothing")
    add_format_flag(rotate)
    rotate.set_defaults(handler=cmd_rotate)


def cmd_status(args: argparse.Namespace) -> int:
    import boto3

    from modelshield.keys import key_status
    from modelshield.rotation import groups_from_env
    from modelshield.store.artifacts import ArtifactStore

    missing = [n for n in ("ARTIFACTS_TABLE", "KMS_KEY_ID") if not os.environ.get(n)]
    if missing:
        raise ConfigError(f"missing environment variables: {', '.join(missing)}")
    statuses = key_status(
        kms=boto3.client("kms"),
        groups=groups_from_env()(),
        default_key_id=os.environ["KMS_KEY_ID"],
        artifacts=ArtifactStore(os.environ["ARTIFACTS_TABLE"]).all(),
    )
    if args.format == "json":
        print_json({"keys": [{**s.model_dump(mode="json"), "compliant": s.compliant} for s in statuses]})
    else:
        print_table(
            ["KEY", "GROUPS", "ROTATION", "LAST ROTATION", "ARTIFACTS", "OLDEST DATA KEY", "PROBLEM"],
            [
                (
                    s.key_arn,
                    ",".join(s.groups) or "(none: old key)",
                    {True: "on", False: "OFF", None: "?"}[s.rotation_enabled],
                    f"{s.last_rotation:%Y-%m-%d}"
                    + (" (created)" if s.last_rotation_source == "creation_date" else "")
                    if s.last_rotation
                    else "",
                    s.artifacts,
                    f"{s.oldest_data_key:%Y-%m-%d}" if s.oldest_data_key else "",
                    s.error or "",
                )
                for s in statuses
            ],
        )
    return 0 if all(s.compliant for s in statuses if s.groups or s.artifacts) else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    import boto3

    from modelshield.rotation import rotator_from_env

    principal = str(boto3.client("sts").get_caller_identity()["Arn"])
    report = rotator_from_env(principal=principal).run(dry_run=args.dry_run)
    if args.format == "json":
        print_json({**report.model_dump(mode="json"), "counts": report.counts()})
        return 1 if report.failures else 0
    verb = "would" if report.dry_run else "did"
    counts = report.counts()
    print(
        f"rotation run {report.run_id}: examined {counts['examined']}, {verb} re-wrap {counts['rewrap']}, "
        f"re-key {counts['rekey']}, retire {counts['retired_grants']} grant(s); "
        f"{counts['failures']} failure(s)"
    )
    for key in report.keys_without_rotation:
        print(f"  key without automatic rotation: {key}")
    for item in report.actions:
        print(
            f"  {item.action.value:7} {item.artifact_id} ({item.version_id}) {item.from_key} -> {item.to_key}"
        )
    for failure in report.failures:
        print(f"  FAILED  {failure['artifact_id']} ({failure['version_id']}): {failure['error']}")
    for deferred in report.deferred:
        print(f"  DEFERRED {deferred['artifact_id']} ({deferred['version_id']}): {deferred['reason']}")
    return 1 if report.failures else 0
