"""`modelshield keys status|rotate`: key compliance, and the rotation run executed locally.

`keys rotate` runs exactly the domain function the RotateFunction runs on its schedule, without a time
limit; `--dry-run` reports what it would re-wrap, re-key and retire without changing anything.
"""

from __future__ import annotations

import argparse
from typing import Any

from modelshield import config, wiring
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.keys import key_status
from modelshield.store.artifacts import ArtifactStore


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
    settings = config.load(config.KeysSettings)
    statuses = key_status(
        kms=wiring.client("kms"),
        groups=wiring.group_source(settings.groups)(),
        default_key_id=settings.kms_key_id,
        artifacts=ArtifactStore(settings.artifacts_table, wiring.dynamodb()).all(),
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
    settings = config.rotate_settings()
    report = wiring.rotator(settings, principal=wiring.caller_arn()).run(dry_run=args.dry_run)
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
