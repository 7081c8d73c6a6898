"""`modelshield scan PATH...` and `modelshield explain RULE`: local scans under a security group.

Directories are walked recursively. Nothing is skipped silently: a symlink met during a walk is not
followed (it could point anywhere) and a special file (FIFO, device) is not opened (it could block);
both are reported as results with an MS-SCAN-INCOMPLETE finding, so the exit code reflects them.
A symlink named on the command line is followed: the user asked for it.

Exit codes: 0 every file allowed (warnings allowed); 1 something blocked or errored; 2 usage or I/O
error (a missing PATH stops before scanning; an unreadable file is reported, then exits 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshield.cli.output import print_json
from modelshield.cli.report import (
    add_output_flag,
    finding_line,
    output_to,
    report,
    rule_line,
    summary,
    summary_line,
)
from modelshield.errors import UsageError
from modelshield.models import Finding, Format, RuleId, ScanReport, Severity
from modelshield.policy.catalog import CATALOG, rule_spec, settings_help
from modelshield.policy.engine import Evaluation, evaluate
from modelshield.policy.gather import local_metadata
from modelshield.policy.groups import SecurityGroup, content_safety_group, default_groups, load_groups
from modelshield.policy.metadata import ArtifactMetadata, metadata_from_pairs
from modelshield.policy.sources import resolve_group
from modelshield.sarif import sarif_log
from modelshield.walk import walk_files

SCAN_EXAMPLES = """examples:
  modelshield scan model.pt                          table; exit 0 allowed, 1 blocked, 2 usage/I-O error
  modelshield scan models/ --format json -o scan.json
  modelshield scan ~/.cache/huggingface/hub/models--org--name --follow-symlinks
  modelshield scan s3://my-bucket/models/model.pt    (downloads the object to a temporary file first)
  modelshield scan model.pt --groups examples/groups.yaml --group NLP-Research --metadata license=mit
"""


def register(sub: Any) -> None:
    scan = sub.add_parser(
        "scan",
        help="scan model files or directories locally, without executing them",
        description="Scan files, directories (recursively) or s3:// objects with the built-in content-safety "
        "policy, or a security group from --groups FILE. Nothing is skipped silently: links not followed, "
        "links leaving the tree and special files are results with an MS-SCAN-INCOMPLETE finding, named in "
        "the summary. JSON output follows schemas/scan-result.schema.json. "
        "Exit 0: all allowed; 1: something blocked or errored; 2: usage or I/O error.",
        epilog=SCAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument(
        "paths", nargs="*", metavar="PATH", help="files, directories or s3://bucket/key[?versionId=V] to scan"
    )
    scan.add_argument("--groups", metavar="FILE", help="security groups YAML (see examples/groups.yaml)")
    scan.add_argument(
        "--group",
        metavar="NAME",
        help="the group to apply (from --groups, or a seeded default group such as S3-Production); "
        "with --groups and no --group each file's path is resolved against the groups' sources "
        "(default: the built-in content-safety policy)",
    )
    scan.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="what an upload's metadata would say: license=, author=, source_repo=, uploader=, signature=, "
        "source_type= (repeatable)",
    )
    scan.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="in directories, follow symlinks whose target stays inside the tree (Hugging Face cache "
        "folders are links into blobs/: scan the models--org--name folder); links leaving the tree are "
        "refused and named (default: links are not followed, and named)",
    )
    scan.add_argument(
        "--format", choices=["table", "json", "sarif"], default="table", help="output format (default: table)"
    )
    add_output_flag(scan)
    scan.add_argument("--explain", metavar="RULE", help="print a rule's rationale and settings, then exit")
    scan.set_defaults(handler=run_scan)

    explain = sub.add_parser(
        "explain",
        help="explain a rule: what it checks, why, and its settings (no RULE: list every rule)",
        description="Without RULE, list every rule id with its title and default severity.",
        epilog="examples:\n  modelshield explain\n  modelshield explain MS-CODE-EXEC --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument("rule", metavar="RULE", nargs="?", help="a rule id such as MS-CODE-EXEC")
    explain.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format (default: table)"
    )
    explain.set_defaults(handler=run_explain)


# -- explain -------------------------------------------------------------------------------------------
def explain_rule(rule: str) -> dict[str, Any]:
    try:
        spec = rule_spec(rule)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    defaults = {}
    for group in [content_safety_group(), *default_groups()]:
        setting = group.rule(spec.id)
        defaults[group.name] = {"enabled": setting.enabled, "blocking": setting.blocking}
    return {
        "rule": spec.id.value,
        "title": spec.title,
        "kind": spec.kind,
        "category": spec.category,
        "default_severity": spec.default_severity.name,
        "mandatory": spec.mandatory,
        "checks": spec.checks,
        "rationale": spec.rationale,
        "metadata": spec.metadata,
        "settings": [
            {"name": n, "type": t, "default": d, "description": desc} for n, t, d, desc in settings_help(spec)
        ],
        "groups": defaults,
    }


def list_rules() -> list[dict[str, Any]]:
    return [
        {
            "rule": spec.id.value,
            "title": spec.title,
            "kind": spec.kind,
            "default_severity": spec.default_severity.name,
            "mandatory": spec.mandatory,
        }
        for spec in CATALOG.values()
    ]


def run_explain(args: argparse.Namespace) -> int:
    if not args.rule:
        rules = list_rules()
        if args.format == "json":
            print_json({"rules": rules})
        else:
            for r in rules:
                print(f"{r['rule']:<18}  {r['kind']:<7}  {r['default_severity']:<8}  {r['title']}")
            print("\n`modelshield explain RULE` for what a rule checks, why, and its settings")
        return 0
    info = explain_rule(args.rule)
    if args.format == "json":
        print_json(info)
        return 0
    print(f"{info['rule']}: {info['title']}")
    mandatory = ", mandatory (cannot be disabled or made non-blocking)" if info["mandatory"] else ""
    print(
        f"  {info['kind']} rule, {info['category']}, default severity {info['default_severity']}{mandatory}"
    )
    print(f"  Checks: {info['checks']}")
    print(f"  Why: {info['rationale']}")
    print("  Metadata needed:")
    for source_type, needed in info["metadata"].items():
        print(f"    {source_type:<12} {needed}")
    print("  Settings (under `settings:` in a group's rule):")
    for s in info["settings"]:
        print(f"    {s['name']}: {s['type']} = {s['default']}  ({s['description']})")
    print("  In the built-in and seeded groups:")
    for name, setting in info["groups"].items():
        state = ("blocking" if setting["blocking"] else "non-blocking") if setting["enabled"] else "disabled"
        print(f"    {name:<22} {state}")
    return 0


# -- scan ----------------------------------------------------------------------------------------------
@dataclass
class FileResult:
    path: str
    report: ScanReport
    evaluation: Evaluation
    io_error: bool = False
    skip_reason: str | None = None  # not read: why (also an MS-SCAN-INCOMPLETE finding)


@dataclass(frozen=True)
class _Target:
    path: Path
    display: str
    skip_reason: str | None = None  # not opened: link not followed or leaving the tree, special file
    s3_uri: str | None = None  # an object to fetch first (s3://bucket/key[?versionId=...])


def _targets(paths: Sequence[str], *, follow_symlinks: bool = False) -> Iterator[_Target]:
    for raw in paths:
        if raw.startswith("s3://"):
            yield _Target(Path(), raw, s3_uri=raw)
            continue
        path = Path(raw)
        try:
            info = path.stat()  # follows a symlink named explicitly: the user asked for it
        except FileNotFoundError:
            raise UsageError(f"{raw}: no such file or directory") from None
        except OSError as exc:
            raise UsageError(f"{raw}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            for entry in walk_files(path, follow_symlinks=follow_symlinks):
                display = os.path.normpath(os.path.join(raw, entry.relative))
                yield _Target(entry.path, display, entry.skip_reason)
        elif stat.S_ISREG(info.st_mode):
            yield _Target(path, raw)
        else:
            yield _Target(path, raw, "not a regular file (FIFO, socket or device); not opened")


def _pick_group(args: argparse.Namespace) -> tuple[SecurityGroup | None, list[SecurityGroup]]:
    """The one group to apply, or None with the groups to resolve each file against."""
    if args.groups:
        groups = load_groups(Path(args.groups))
    elif args.group:
        groups = default_groups()
    else:
        return content_safety_group(), []
    if args.group:
        for group in groups:
            if group.name == args.group:
                return group, groups
        names = ", ".join(g.name for g in groups)
        where = args.groups or "the default groups"
        raise UsageError(f"--group {args.group!r}: no such group in {where} (groups: {names})")
    if len(groups) == 1:
        return groups[0], groups
    return None, groups


def _not_scanned(target: _Target, reason: str) -> ScanReport:
    finding = Finding(
        rule=RuleId.SCAN_INCOMPLETE, severity=Severity.HIGH, message=reason, location=target.display
    )
    return ScanReport(path=target.display, format=Format.UNKNOWN, size=0, findings=[finding])


def scan_files(
    paths: Sequence[str],
    *,
    group: SecurityGroup | None,
    groups: Sequence[SecurityGroup],
    metadata: ArtifactMetadata,
    follow_symlinks: bool = False,
) -> list[FileResult]:
    """Scan and evaluate every file under `paths` (see the module docstring for what is reported)."""
    from modelshield import scanning  # registers every scanner; imported here to keep `explain` fast

    results: list[FileResult] = []
    for target in _targets(paths, follow_symlinks=follow_symlinks):
        io_error = False
        with contextlib.ExitStack() as cleanup:
            local = target.path
            if target.s3_uri:
                local = cleanup.enter_context(_fetched(target.s3_uri))
            if target.skip_reason:
                report = _not_scanned(target, target.skip_reason)
            else:
                try:
                    report = scanning.scan_path(local, display_name=target.display)
                except OSError as exc:
                    report = _not_scanned(target, f"cannot read: {exc.strerror or exc}")
                    io_error = True
            where = target.display if not target.s3_uri else target.s3_uri.split("/", 3)[-1]
            chosen = group or resolve_group(groups, "*", Path(os.path.normpath(where)).as_posix())[0]
            evaluation = evaluate(report, chosen, local_metadata(metadata, local), artifact_key=where)
        results.append(FileResult(target.display, report, evaluation, io_error, target.skip_reason))
    return results


@contextlib.contextmanager
def _fetched(uri: str) -> Iterator[Path]:
    """Download an S3 object to a private temporary file (zip-based formats need random access)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from modelshield import wiring
    from modelshield.aws import is_not_found, unreachable
    from modelshield.crypto.s3 import parse_s3_uri

    location = parse_s3_uri(uri)
    extra = {"VersionId": location.version_id} if location.version_id else {}
    with tempfile.TemporaryDirectory(prefix="modelshield-scan-") as tmp:
        local = Path(tmp) / (Path(location.key).name or "object")
        try:
            s3 = wiring.s3_client()
            s3.download_file(location.bucket, location.key, str(local), ExtraArgs=extra or None)
        except ClientError as exc:
            if is_not_found(exc):
                raise UsageError(f"{uri}: no such object (check the bucket, key and version)") from None
            raise UsageError(f"{uri}: cannot download: {exc}") from None
        except BotoCoreError as exc:
            raise unreachable(exc) or UsageError(f"{uri}: cannot download: {exc}") from None
        yield local


def result_json(result: FileResult) -> dict[str, Any]:
    """One file as a result of schemas/scan-result.schema.json (the same shape `verdict` prints)."""
    report, evaluation = result.report, result.evaluation
    return {
        "path": result.path,
        "format": report.format.value,
        "formats": report.metadata.get("formats", [report.format.value]),
        "verdict": evaluation.verdict.value,
        "message": evaluation.message,
        "sha256": report.sha256,
        "size": report.size,
        "group": evaluation.group,
        "group_version": evaluation.group_version,
        "findings": [f.model_dump(mode="json") for f in report.findings],
        "rules": [r.model_dump(mode="json", exclude={"findings"}) for r in evaluation.rules],
    }


def skipped_of(results: Sequence[FileResult]) -> list[dict[str, str]]:
    return [{"path": r.path, "reason": r.skip_reason} for r in results if r.skip_reason]


def print_table(results: Sequence[FileResult]) -> None:
    for result in results:
        report, evaluation = result.report, result.evaluation
        print(f"Scan of {result.path} using {evaluation.group} group (v{evaluation.group_version})")
        sha = report.sha256[:16] + "..." if report.sha256 else "-"
        print(f"  format {report.format.value}, {report.size} bytes, sha256 {sha}")
        for rule in evaluation.rules:
            print(rule_line(rule))
        if report.findings:
            print("  findings:")
            for f in report.findings:
                print(finding_line(f))
        print(f"  verdict: {evaluation.verdict.value}")
        print()
    print(summary_line(summary([result_json(r) for r in results], skipped_of(results)), "file"))


def run_scan(args: argparse.Namespace) -> int:
    if args.explain:
        return run_explain(
            argparse.Namespace(rule=args.explain, format="json" if args.format == "json" else "table")
        )
    if not args.paths:
        raise UsageError("scan: give at least one PATH (a file or a directory)")
    metadata = metadata_from_pairs(args.metadata)
    group, groups = _pick_group(args)
    results = scan_files(
        args.paths, group=group, groups=groups, metadata=metadata, follow_symlinks=args.follow_symlinks
    )
    if not results:
        raise UsageError(f"no files to scan under {' '.join(args.paths)}")
    with output_to(args.output):
        if args.format == "json":
            print_json(report([result_json(r) for r in results], skipped_of(results)))
        elif args.format == "sarif":
            print_json(sarif_log([(r.report, r.evaluation) for r in results]))
        else:
            print_table(results)
    if args.output or args.format != "table":  # the summary still reaches a person watching stderr
        counts = summary([result_json(r) for r in results], skipped_of(results))
        print(summary_line(counts, "file"), file=sys.stderr)
    unreadable = [r for r in results if r.io_error]
    for r in unreadable:
        print(f"modelshield: error: {r.path}: {r.report.findings[0].message}", file=sys.stderr)
    if unreadable:
        return 2
    return 0 if all(r.evaluation.verdict.releases for r in results) else 1
