"""`modelshield groups list|show|apply|validate`: security groups in the groups table.

list/show/apply talk to DynamoDB (table from GROUPS_TABLE; AWS_ENDPOINT_URL points boto3 at the local
stack); validate is offline. `show` prints YAML that `apply` accepts back, version included: a group
that states its version is applied only if the stored one still has that version, so an edit made
from a stale copy fails instead of overwriting someone else's change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from modelshield import config, wiring
from modelshield.admin import affected_artifacts, apply_groups, groups_after, plan_groups
from modelshield.cli.output import print_json, print_table
from modelshield.policy.groups import SecurityGroup, load_groups, load_groups_with_lines
from modelshield.policy.preflight import preflight
from modelshield.store.artifacts import ArtifactStore
from modelshield.store.groups import GroupStore


def register(sub: Any) -> None:
    groups = sub.add_parser("groups", help="list, show, apply and validate security groups")
    actions = groups.add_subparsers(dest="groups_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="list the stored security groups")
    listing.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="print one stored group (YAML that `apply` accepts)")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format")
    show.set_defaults(handler=run_show)

    apply = actions.add_parser(
        "apply",
        help="create or update groups from a YAML file (checked against the stack first; bumps versions)",
        description="Validate FILE, then check it against the live stack before storing anything: every "
        "kms_key_id must name an enabled symmetric KMS key that issues data keys, and no source may already "
        "belong to another stored group. Problems name the file line at fault; any error refuses the whole "
        "file (exit 2), warnings are printed and the file is applied. --dry-run stops after the checks and "
        "prints what would change.",
        epilog="examples:\n  modelshield groups apply examples/groups.yaml --dry-run\n"
        "  modelshield groups apply examples/groups.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("file", metavar="FILE", help="security groups YAML (see examples/groups.yaml)")
    apply.add_argument(
        "--dry-run", action="store_true", help="check and show what would change; store nothing"
    )
    apply.add_argument(
        "--ingest-bucket",
        default=None,
        help="bucket that ${IngestBucket} stands for (default: $INGEST_BUCKET; unset: any bucket)",
    )
    apply.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    apply.set_defaults(handler=run_apply)

    validate = actions.add_parser("validate", help="check a groups YAML file offline")
    validate.add_argument("file", metavar="FILE")
    validate.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    validate.set_defaults(handler=run_validate)


def _store() -> GroupStore:
    return wiring.group_store(config.load(config.GroupsSource))


def group_document(group: SecurityGroup) -> dict[str, Any]:
    """A group as YAML/JSON for people: configured rules only, without the ids repeated in each body."""
    data = group.model_dump(mode="json", exclude_none=True)
    data["rules"] = {
        rule: {k: v for k, v in body.items() if k != "id"} for rule, body in data["rules"].items()
    }
    return data


def _summary(group: SecurityGroup) -> list[Any]:
    sources = ", ".join(f"{s.type}:{s.bucket}/{s.prefix}" for s in group.sources) or "-"
    blocking = sum(1 for r in group.effective_rules() if r.enabled and r.blocking)
    warning = sum(1 for r in group.effective_rules() if r.enabled and not r.blocking)
    return [
        group.name,
        group.version,
        sources,
        f"{blocking} blocking, {warning} warning",
        group.kms_key_id or "default",
    ]


_HEADERS = ["NAME", "VERSION", "SOURCES", "RULES", "KMS KEY"]


def _say_defaults() -> None:
    print(
        "no groups stored yet: these are the built-in defaults the scanner uses until "
        "`modelshield groups apply FILE` stores your own",
        file=sys.stderr,
    )


def _effective_groups(store: GroupStore) -> list[SecurityGroup]:
    """What the scanner evaluates with, said on stderr when these are the built-in defaults."""
    return store.effective(on_defaults=_say_defaults)


def run_list(args: argparse.Namespace) -> int:
    groups = _effective_groups(_store())
    if args.format == "json":
        print_json({"groups": [group_document(g) for g in groups]})
    else:
        print_table(_HEADERS, [_summary(g) for g in groups])
    return 0


def run_show(args: argparse.Namespace) -> int:
    store = _store()
    if store.list():
        group = store.get(args.name)
    else:
        group = next((g for g in _effective_groups(store) if g.name == args.name), None) or store.get(
            args.name
        )
    if args.format == "json":
        print_json(group_document(group))
    else:
        print(yaml.safe_dump({"groups": [group_document(group)]}, sort_keys=False, width=110), end="")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    store = _store()
    ingest_bucket = args.ingest_bucket if args.ingest_bucket is not None else store.ingest_bucket
    groups, lines, origin = load_groups_with_lines(Path(args.file), ingest_bucket=ingest_bucket)
    stored = store.list()
    warnings = preflight(groups, lines, origin, kms=wiring.client("kms"), stored=stored)
    for p in warnings:
        print(f"modelshield: warning: {p.render(origin)}", file=sys.stderr)
    affected: dict[str, Any] | None = None
    if args.dry_run:
        changes = plan_groups(groups, stored)
        affected = _affected(store, groups, stored)
    else:
        audit = wiring.optional_audit_log()
        changes = apply_groups(store, groups, origin=str(args.file), audit=audit, principal=wiring.caller_arn)
    if args.format == "json":
        document: dict[str, Any] = {
            "dry_run": args.dry_run,
            "applied": [] if args.dry_run else changes,
            "changes": changes,
            "warnings": [p.as_json() for p in warnings],
        }
        if args.dry_run:
            document["affected"] = affected
        print_json(document)
        return 0
    verb = "would be " if args.dry_run else ""
    for c in changes:
        versions = f"v{c['to']}" if c["from"] in (None, c["to"]) else f"v{c['from']} -> v{c['to']}"
        print(f"{c['name']}: {verb}{c['change']} ({versions})")
    if args.dry_run:
        _print_affected(affected)
        print(f"dry run: {origin} passed every check; nothing was stored")
    return 0


def _affected(
    store: GroupStore, groups: list[SecurityGroup], stored: list[SecurityGroup]
) -> dict[str, Any] | None:
    """Existing artifacts the file would move to another group or judge by other rules (None: the
    artifacts table is not known here, so they cannot be listed)."""
    table = config.load(config.StackTarget).artifacts_table
    if not table:
        return None
    states = ArtifactStore(table, wiring.dynamodb()).all()
    return affected_artifacts(store.effective(), groups_after(groups, stored), states)


def _print_affected(affected: dict[str, Any] | None) -> None:
    if affected is None:
        print(
            'affected artifacts: not listed (ARTIFACTS_TABLE is not set; `eval "$(modelshield local env)"`)'
        )
        return
    count = affected["count"]
    if not count:
        print("affected artifacts: none (no existing artifact changes group, rules or key)")
        return
    print(f"affected artifacts: {count} would change group, rules or key (rescan to re-evaluate them):")
    print_table(
        ["ARTIFACT", "VERSIONS", "GROUP", "CHANGES", "VERDICT"],
        [
            [
                a["artifact"],
                a["versions"],
                a["from_group"]
                if a["from_group"] == a["to_group"]
                else f"{a['from_group']} -> {a['to_group']}",
                ", ".join(a["changes"]),
                a["verdict"],
            ]
            for a in affected["artifacts"]
        ],
    )
    if affected["truncated"]:
        shown = len(affected["artifacts"])
        print(f"  ... and {count - shown} more (the first {shown} listed)")


def run_validate(args: argparse.Namespace) -> int:
    groups = load_groups(Path(args.file))
    if args.format == "json":
        print_json({"valid": True, "groups": [group_document(g) for g in groups]})
    else:
        print(f"{args.file}: valid, {len(groups)} group(s)")
        print_table(_HEADERS, [_summary(g) for g in groups])
    return 0
