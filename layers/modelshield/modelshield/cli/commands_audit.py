"""`modelshield audit list|verify`: read and check the hash-chained audit log (AUDIT_TABLE)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelshield import wiring
from modelshield.audit import AuditLog, AuditQuery, ChainHead, Decision
from modelshield.aws import unreachable
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.errors import ModelShieldError, UsageError

# `audit verify` exit codes: 0 chain intact, 1 tampered (a record deleted, edited or relinked), and
# COULD_NOT_CHECK when the log could not be read at all (no stack, no table, no access): not evidence
# either way, and a script must not mistake it for tampering or for a clean check.
COULD_NOT_CHECK = 3


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="list and verify the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    audit_sub.required = True

    list_cmd = audit_sub.add_parser("list", help="audit records, newest first, with filters")
    list_cmd.add_argument("--artifact", help="artifact id (<bucket>/<key>)")
    list_cmd.add_argument("--principal", help="exact principal ARN")
    list_cmd.add_argument("--action", help="e.g. access.approve, grant.retire, kms.Decrypt")
    list_cmd.add_argument("--decision", choices=[d.value for d in Decision], type=str.upper)
    list_cmd.add_argument("--since", type=_time, help="ISO time, e.g. 2026-11-20T00:00:00Z")
    list_cmd.add_argument("--until", type=_time, help="ISO time")
    list_cmd.add_argument("--limit", type=int, default=100, help="at most this many records (default: 100)")
    list_cmd.add_argument("--oldest-first", action="store_true", help="oldest first (default: newest first)")
    add_format_flag(list_cmd)
    list_cmd.set_defaults(handler=cmd_list)

    verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain; exit 1 if a record was deleted or edited, 3 if it could not be read",
        description="Walk the whole audit chain and check every link and hash. Exit 0: intact; 1: tampered "
        "(records deleted, edited or relinked, each named); 3: could not check (no stack, no table, no "
        "access): nothing was verified, which is not evidence of tampering.",
    )
    verify.add_argument(
        "--anchor",
        type=_anchor,
        help="SEQ:HASH of a head saved earlier (default: the latest automatic anchor of the stack)",
    )
    add_format_flag(verify)
    verify.set_defaults(handler=cmd_verify)


def _time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value!r}") from None


def _anchor(value: str) -> ChainHead:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("expected SEQ:HASH (a sequence number and a 64-hex-digit hash)")
    return ChainHead(int(seq), digest.lower())


def _log() -> AuditLog:
    return wiring.audit_log()


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    query = AuditQuery(
        artifact_id=args.artifact,
        principal=args.principal,
        action=args.action,
        decision=Decision(args.decision) if args.decision else None,
        since=args.since,
        until=args.until,
        limit=args.limit,
        newest_first=not args.oldest_first,
    )
    records = _log().list(query)
    if args.format == "json":
        print_json({"records": [r.model_dump(mode="json") for r in records]})
        return 0
    print_table(
        ["SEQ", "TIME", "ACTION", "DECISION", "PRINCIPAL", "ARTIFACT", "REASON"],
        [
            (
                r.seq,
                r.at.strftime("%Y-%m-%d %H:%M:%S"),
                r.action,
                r.decision.value,
                r.principal,
                r.artifact_id,
                r.reason,
            )
            for r in records
        ],
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from modelshield.audit import verify_against_latest_anchor

    try:
        report = verify_against_latest_anchor(_log(), wiring.anchor_store(), anchor=args.anchor)
    except (ModelShieldError, BotoCoreError, ClientError) as exc:  # not checked, so not "tampered"
        print(f"COULD NOT CHECK: {unreachable(exc) or exc}", file=sys.stderr)
        return COULD_NOT_CHECK
    if args.format == "json":
        print_json(report.to_json())
    elif report.could_not_check:
        print(f"COULD NOT CHECK: {report.could_not_check}", file=sys.stderr)
    else:
        head = f"head {report.head.seq} {report.head.hash}" if report.head else "no head"
        if report.anchor is not None:
            head += f"; checked against {report.anchor_source} anchor {report.anchor.seq}"
        if report.ok:
            print(f"OK: {report.checked} records, chain intact ({head})")
        else:
            print(f"TAMPERED: {len(report.problems)} problem(s) in {report.checked} records ({head})")
            for p in report.problems:
                print(f"  seq {p.seq}: {p.kind}: {p.message}")
            if report.truncated_report:
                print("  ... more problems not shown")
    if report.could_not_check:
        return COULD_NOT_CHECK
    return 0 if report.ok else 1
