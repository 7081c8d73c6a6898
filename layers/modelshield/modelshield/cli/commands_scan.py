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
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshield.cli.output import print_json
from modelshield.errors import UsageError
from modelshield.models import Finding, Format, RuleId, RuleStatus, ScanReport, Severity, Verdict
from modelshield.policy.catalog import CATALOG, rule_spec, settings_help
from modelshield.policy.engine import Evaluation, evaluate
from modelshield.policy.gather import local_metadata
from modelshield.policy.groups import SecurityGroup, content_safety_group, default_groups, load_groups
from modelshield.policy.metadata import ArtifactMetadata, metadata_from_pairs
from modelshield.policy.sources import resolve_group
from modelshield.sarif import sarif_log

_STATUS = {
    RuleStatus.PASS: "PASS",
    RuleStatus.FAIL: "FAIL",
    RuleStatus.ERROR: "ERROR",
    RuleStatus.SKIPPED: "SKIP",
}


def register(sub: Any) -> None:
    scan = sub.add_parser(
        "scan",
        help="scan model files or directories locally, without executing them",
        description="Scan files or directories (recursively) with the built-in content-safety policy, "
        "or a security group from --groups FILE. Exit 0: all allowed; 1: something blocked or errored; "
        "2: usage or I/O error.",
    )
    scan.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to scan")
    scan.add_argument("--groups", metavar="FILE", help="security groups YAML (see examples/groups.yaml)")
    scan.add_argument(
        "--group",
        metavar="NAME",
        help="the group to apply (from --groups, or a seeded default group such as S3-Production); "
        "with --groups and no --group each file's path is resolved against the groups' sources",
    )
    scan.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="what an upload's metadata would say: license=, author=, source_repo=, uploader=, signature=, "
        "source_type= (repeatable)",
    )
    scan.add_argument("--format", choices=["table", "json", "sarif"], default="table", help="output format")
    scan.add_argument("--explain", metavar="RULE", help="print a rule's rationale and settings, then exit")
    scan.set_defaults(handler=run_scan)

    explain = sub.add_parser("explain", help="explain a rule: what it checks, why, and its settings")
    explain.add_argument("rule", metavar="RULE", help="a rule id such as MS-CODE-EXEC")
    explain.add_argument("--format", choices=["table", "json"], default="table", help="output format")
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


def run_explain(args: argparse.Namespace) -> int:
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


@dataclass(frozen=True)
class _Target:
    path: Path
    display: str
    skip_reason: str | None = None  # not opened: symlink in a walk, special file


def _targets(paths: Sequence[str]) -> Iterator[_Target]:
    for raw in paths:
        path = Path(raw)
        try:
            info = path.stat()  # follows a symlink named explicitly
        except FileNotFoundError:
            raise UsageError(f"{raw}: no such file or directory") from None
        except OSError as exc:
            raise UsageError(f"{raw}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(path, raw)
        else:
            yield _classify(path, raw, info, in_walk=False)


def _classify(path: Path, display: str, info: os.stat_result, *, in_walk: bool) -> _Target:
    if in_walk and stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        return _Target(path, display, f"symlink not followed (points to {target}); scan its target directly")
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
        return _Target(path, display, "not a regular file (FIFO, socket or device); not opened")
    return _Target(path, display)


def _walk(root: Path, display_root: str) -> Iterator[_Target]:
    def onerror(exc: OSError) -> None:
        raise UsageError(f"{exc.filename}: cannot list directory: {exc.strerror}")

    for current, dirnames, filenames in os.walk(root, followlinks=False, onerror=onerror):
        dirnames.sort()
        here = Path(current)
        shown = os.path.join(display_root, os.path.relpath(current, root)) if here != root else display_root
        entries: list[tuple[str, Path]] = []
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)  # never descend through a link
                entries.append((name, here / name))
        entries.extend((name, here / name) for name in filenames)
        for name, path in sorted(entries):
            display = os.path.normpath(os.path.join(shown, name))
            try:
                info = path.lstat()
            except OSError as exc:
                yield _Target(path, display, f"cannot stat: {exc.strerror}")
                continue
            yield _classify(path, display, info, in_walk=True)


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
) -> list[FileResult]:
    """Scan and evaluate every file under `paths` (see the module docstring for what is reported)."""
    from modelshield import scanning  # registers every scanner; imported here to keep `explain` fast

    results: list[FileResult] = []
    for target in _targets(paths):
        io_error = False
        if target.skip_reason:
            report = _not_scanned(target, target.skip_reason)
        else:
            try:
                report = scanning.scan_path(target.path, display_name=target.display)
            except OSError as exc:
                report = _not_scanned(target, f"cannot read: {exc.strerror or exc}")
                io_error = True
        chosen = group or resolve_group(groups, "*", Path(os.path.normpath(target.display)).as_posix())[0]
        evaluation = evaluate(
            report, chosen, local_metadata(metadata, target.path), artifact_key=target.display
        )
        results.append(FileResult(target.display, report, evaluation, io_error))
    return results


def result_json(result: FileResult) -> dict[str, Any]:
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
        "findings": [
            {"rule": f.rule.value, "severity": f.severity.name, "message": f.message, "location": f.location}
            for f in report.findings
        ],
        "rules": [
            {
                "rule": r.rule.value,
                "status": r.status.value,
                "blocking": r.blocking,
                "severity": r.severity.name,
                "message": r.message,
            }
            for r in evaluation.rules
        ],
    }


def print_table(results: Sequence[FileResult]) -> None:
    width = max(len(rule.value) for rule in CATALOG)
    for result in results:
        report, evaluation = result.report, result.evaluation
        print(f"Scan of {result.path} using {evaluation.group} group (v{evaluation.group_version})")
        sha = report.sha256[:16] + "..." if report.sha256 else "-"
        print(f"  format {report.format.value}, {report.size} bytes, sha256 {sha}")
        for rule in evaluation.rules:
            if rule.status == RuleStatus.SKIPPED:
                mode = "disabled"
            else:
                mode = "blocking" if rule.blocking else "warning"
            line = f"  {_STATUS[rule.status]:<5} {rule.rule.value:<{width}}  {mode:<8}"
            if rule.status in (RuleStatus.FAIL, RuleStatus.ERROR):
                line += f"  {rule.severity.name:<8}  {rule.message}"
            elif rule.message and rule.status == RuleStatus.PASS:
                line += f"  {rule.message}"
            print(line.rstrip())
        if report.findings:
            print("  findings:")
            for f in report.findings:
                print(f"    {f.severity.name:<8}  {f.rule.value:<{width}}  {f.location}  {f.message}")
        print(f"  verdict: {evaluation.verdict.value}")
        print()
    if len(results) > 1:
        counts = {v: sum(1 for r in results if r.evaluation.verdict == v) for v in Verdict}
        parts = ", ".join(f"{n} {v.value.lower().replace('_', ' ')}" for v, n in counts.items() if n)
        print(f"{len(results)} files scanned: {parts}")


def run_scan(args: argparse.Namespace) -> int:
    if args.explain:
        return run_explain(
            argparse.Namespace(rule=args.explain, format="json" if args.format == "json" else "table")
        )
    if not args.paths:
        raise UsageError("scan: give at least one PATH (a file or a directory)")
    metadata = metadata_from_pairs(args.metadata)
    group, groups = _pick_group(args)
    results = scan_files(args.paths, group=group, groups=groups, metadata=metadata)
    if not results:
        raise UsageError(f"no files to scan under {' '.join(args.paths)}")
    if args.format == "json":
        print_json({"results": [result_json(r) for r in results]})
    elif args.format == "sarif":
        print_json(sarif_log([(r.report, r.evaluation) for r in results]))
    else:
        print_table(results)
    unreadable = [r for r in results if r.io_error]
    for r in unreadable:
        print(f"modelshield: error: {r.path}: {r.report.findings[0].message}", file=sys.stderr)
    if unreadable:
        return 2
    return 0 if all(r.evaluation.verdict.releases for r in results) else 1
