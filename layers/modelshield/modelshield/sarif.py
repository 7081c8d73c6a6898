"""SARIF 2.1.0 output, so `modelshield scan --format sarif` plugs into code-scanning UIs in CI.

One run; the driver's rules are the rule catalogue (with rationale as help). Results are:
- every finding of a failed rule (level from its severity),
- one result per failed or errored rule that has no findings of its own (a missing license),
- findings that did not count (rule disabled in the group, or below its min_severity), marked with
  an external suppression so a viewer hides them by default but the evidence is kept.
Locations: `artifactLocation.uri` is the scanned file; a member inside an archive is a logical
location (`model.zip!data.pkl`), and `region.byteOffset` is given only when the offset is in the
scanned file itself (an offset inside a compressed member would point at the wrong bytes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from modelshield import __version__
from modelshield.models import Finding, RuleResult, RuleStatus, ScanReport, Severity
from modelshield.policy.catalog import CATALOG
from modelshield.policy.engine import Evaluation

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def level(severity: Severity) -> str:
    """SARIF level: CRITICAL/HIGH are errors, MEDIUM warnings, LOW/INFO notes."""
    if severity >= Severity.HIGH:
        return "error"
    if severity >= Severity.MEDIUM:
        return "warning"
    return "note"


def split_location(report_path: str, location: str) -> tuple[str | None, int | None]:
    """(member inside the file or None, byte offset or None) from "file!member@offset"."""
    rest = location[len(report_path) :] if location.startswith(report_path) else ""
    offset: int | None = None
    head, at, tail = rest.rpartition("@")
    if at and tail.isdigit():
        offset, rest = int(tail), head
    member = rest[1:] if rest.startswith("!") else None
    return member, offset


def file_uri(path: str) -> str:
    """A URI reference for a local path: relative stays relative (CI checkouts), absolute becomes file://."""
    pure = PurePath(path)
    if pure.is_absolute():
        return Path(path).as_uri()
    return quote(path.replace(os.sep, "/"), safe="/")


def _rules() -> list[dict[str, Any]]:
    out = []
    for spec in CATALOG.values():
        out.append(
            {
                "id": spec.id.value,
                "name": spec.title.title().replace(" ", ""),
                "shortDescription": {"text": spec.title},
                "fullDescription": {"text": spec.checks},
                "help": {"text": spec.rationale, "markdown": f"**{spec.title}.** {spec.rationale}"},
                "defaultConfiguration": {"level": level(spec.default_severity)},
                "properties": {
                    "category": spec.category,
                    "kind": spec.kind,
                    "mandatory": spec.mandatory,
                    "tags": ["security", spec.category],
                },
            }
        )
    return out


def _location(report: ScanReport, finding_location: str) -> dict[str, Any]:
    member, offset = split_location(report.path, finding_location or report.path)
    physical: dict[str, Any] = {"artifactLocation": {"uri": file_uri(report.path)}}
    if offset is not None and member is None:
        physical["region"] = {"byteOffset": offset}
    location: dict[str, Any] = {"physicalLocation": physical}
    if member is not None:
        name = f"{report.path}!{member}" + (f"@{offset}" if offset is not None else "")
        location["logicalLocations"] = [{"fullyQualifiedName": name, "kind": "member"}]
    return location


def _result(
    rule_index: dict[str, int],
    report: ScanReport,
    evaluation: Evaluation,
    rule: RuleResult,
    *,
    message: str,
    severity: Severity,
    location: str,
    suppressed: str | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": rule.rule.value,
        "ruleIndex": rule_index[rule.rule.value],
        "level": level(severity),
        "message": {"text": message},
        "locations": [_location(report, location)],
        "properties": {
            "severity": severity.name,
            "blocking": rule.blocking,
            "status": rule.status.value,
            "verdict": evaluation.verdict.value,
            "group": evaluation.group,
            "sha256": report.sha256,
        },
    }
    if suppressed:
        result["suppressions"] = [{"kind": "external", "justification": suppressed}]
    return result


def _key(finding: Finding) -> tuple[str, str, str, int]:
    """Identity of a finding (they carry dicts, so they are not hashable themselves)."""
    return (finding.rule.value, finding.location, finding.message, int(finding.severity))


def _results_for(
    report: ScanReport, evaluation: Evaluation, rule_index: dict[str, int]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_rule = {r.rule: r for r in evaluation.rules}
    counted: set[tuple[str, str, str, int]] = set()
    for rule in evaluation.rules:
        if rule.status not in (RuleStatus.FAIL, RuleStatus.ERROR):
            continue
        for finding in rule.findings:
            counted.add(_key(finding))
            out.append(
                _result(
                    rule_index,
                    report,
                    evaluation,
                    rule,
                    message=finding.message,
                    severity=finding.severity,
                    location=finding.location,
                )
            )
        if not rule.findings:
            text = (
                rule.message if rule.status == RuleStatus.FAIL else f"could not be evaluated: {rule.message}"
            )
            severity = Severity.HIGH if rule.status == RuleStatus.ERROR else rule.severity
            out.append(
                _result(
                    rule_index,
                    report,
                    evaluation,
                    rule,
                    message=text,
                    severity=severity,
                    location=report.path,
                )
            )
    for finding in report.findings:
        rule = by_rule.get(finding.rule)
        if _key(finding) in counted or rule is None:
            continue
        why = (
            f"rule disabled in group {evaluation.group}"
            if rule.status == RuleStatus.SKIPPED
            else f"below the rule's min_severity in group {evaluation.group}"
        )
        out.append(
            _result(
                rule_index,
                report,
                evaluation,
                rule,
                message=finding.message,
                severity=finding.severity,
                location=finding.location,
                suppressed=why,
            )
        )
    return out


def sarif_log(results: Sequence[tuple[ScanReport, Evaluation]]) -> dict[str, Any]:
    """A SARIF 2.1.0 log for scanned files and their evaluations."""
    rules = _rules()
    rule_index = {r["id"]: i for i, r in enumerate(rules)}
    sarif_results: list[dict[str, Any]] = []
    for report, evaluation in results:
        sarif_results.extend(_results_for(report, evaluation, rule_index))
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ModelShield",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": rules,
                    }
                },
                "results": sarif_results,
                "artifacts": [
                    {
                        "location": {"uri": file_uri(report.path)},
                        "length": report.size,
                        **({"hashes": {"sha-256": report.sha256}} if report.sha256 else {}),
                        "properties": {"verdict": evaluation.verdict.value, "group": evaluation.group},
                    }
                    for report, evaluation in results
                ],
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
