"""Evaluate a scan report against a security group: every rule's status, then the verdict.

The verdict table (fail closed):
- ERROR: an MS-SCAN-INCOMPLETE finding, or a blocking rule that could not be evaluated.
- BLOCKED: a blocking rule failed.
- ALLOWED_WITH_WARNINGS: only non-blocking rules failed or errored.
- ALLOWED: nothing failed.
A non-blocking rule that errors is a warning, not an ERROR verdict: its worst outcome is a warning,
so making it block would contradict the group (e.g. an audit group whose author check cannot run).
Rule functions never raise out of evaluate(): a bug in one becomes that rule's ERROR.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from pydantic import BaseModel, Field

from modelshield.models import (
    PICKLE_BASED_FORMATS,
    Finding,
    RuleId,
    RuleResult,
    RuleStatus,
    ScanReport,
    Severity,
    Verdict,
)
from modelshield.policy.catalog import CATALOG, SCANNER_RULES
from modelshield.policy.groups import (
    AuthorRuleSetting,
    FindingRuleSetting,
    FormatRuleSetting,
    HashPinRuleSetting,
    LicenseRuleSetting,
    RuleSettingModel,
    SecurityGroup,
    SizeRuleSetting,
)
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.policy.settings import AuthorSettings
from modelshield.policy.signing import verify_signature


class Evaluation(BaseModel):
    verdict: Verdict
    group: str
    group_version: int
    rules: list[RuleResult]
    message: str = ""  # one line: why the verdict is what it is

    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]


class _Outcome(BaseModel):
    status: RuleStatus
    message: str
    findings: list[Finding] = Field(default_factory=list)
    severity: Severity | None = None


def _pass(message: str) -> _Outcome:
    return _Outcome(status=RuleStatus.PASS, message=message)


def _fail(message: str, **extra: object) -> _Outcome:
    return _Outcome(status=RuleStatus.FAIL, message=message, **extra)


def _error(message: str) -> _Outcome:
    return _Outcome(status=RuleStatus.ERROR, message=message)


# -- scanner rules -----------------------------------------------------------------------------------
def _findings_rule(setting: FindingRuleSetting, report: ScanReport, **_: object) -> _Outcome:
    mine = [f for f in report.findings if f.rule == setting.rule]
    counted = [f for f in mine if f.severity >= setting.settings.min_severity]
    if not counted:
        below = len(mine) - len(counted)
        return _pass(
            f"{below} finding(s) below {setting.settings.min_severity.name.lower()}" if below else ""
        )
    first = counted[0]
    more = f" (+{len(counted) - 1} more)" if len(counted) > 1 else ""
    return _fail(f"{first.message}{more}", findings=counted, severity=max(f.severity for f in counted))


# -- policy rules ------------------------------------------------------------------------------------
def _declared_license(report: ScanReport, metadata: ArtifactMetadata) -> tuple[str | None, str]:
    if metadata.license:
        return metadata.license, "metadata"
    if metadata.user_metadata.get("license"):
        return metadata.user_metadata["license"], "object metadata"
    embedded = report.metadata.get("license")
    if isinstance(embedded, str) and embedded.strip():
        return embedded.strip(), f"{report.format.value} metadata"
    return None, ""


def license_approved(expression: str, approved: list[str]) -> bool:
    """SPDX-ish: 'a OR b' needs one approved, 'a AND b' needs both; parentheses are ignored."""
    allowed = {a.lower() for a in approved}
    cleaned = expression.replace("(", " ").replace(")", " ")
    for alternative in re.split(r"\s+or\s+", cleaned.strip(), flags=re.IGNORECASE):
        parts = [p.strip().lower() for p in re.split(r"\s+and\s+", alternative, flags=re.IGNORECASE)]
        if parts and all(p in allowed for p in parts):
            return True
    return False


def _license_rule(
    setting: LicenseRuleSetting, report: ScanReport, metadata: ArtifactMetadata, **_: object
) -> _Outcome:
    declared, where = _declared_license(report, metadata)
    if not declared:
        return _fail("no license declared (set license metadata, a model card license:, or embed one)")
    approved = setting.settings.approved_licenses
    if approved is None:
        return _pass(f"license {declared!r} (from {where})")
    if license_approved(declared, approved):
        return _pass(f"license {declared!r} (from {where}) is approved")
    return _fail(f"license {declared!r} (from {where}) is not approved (approved: {', '.join(approved)})")


def _formats_seen(report: ScanReport) -> list[str]:
    seen = report.metadata.get("formats")
    formats = [str(f) for f in seen] if isinstance(seen, list) and seen else [report.format.value]
    return list(dict.fromkeys(formats))


def _format_rule(setting: FormatRuleSetting, report: ScanReport, **_: object) -> _Outcome:
    formats = _formats_seen(report)
    problems = []
    if setting.settings.pickle_based == "deny":
        pickled = [f for f in formats if f in {p.value for p in PICKLE_BASED_FORMATS}]
        if pickled:
            problems.append(f"pickle-based format {', '.join(pickled)} is denied")
    approved = setting.settings.approved_formats
    if approved is not None:
        ok = {f.value for f in approved} | {f.value for f in setting.settings.inert_formats}
        outside = [f for f in formats if f not in ok]
        if outside:
            listed = ", ".join(f.value for f in approved)
            problems.append(f"format {', '.join(outside)} is not approved (approved: {listed})")
    if problems:
        return _fail("; ".join(problems))
    return _pass(f"format {', '.join(formats)}")


def _author_rule(
    setting: AuthorRuleSetting, report: ScanReport, metadata: ArtifactMetadata, **_: object
) -> _Outcome:
    settings = setting.settings
    if metadata.signature_path and settings.trusted_public_keys:
        if not metadata.artifact_path:
            return _error("a signature was found but the artifact is not available locally to verify it")
        check = verify_signature(
            metadata.artifact_path,
            metadata.signature_path,
            settings.trusted_public_keys,
            sha256=report.sha256,
            member=metadata.signature_member,
        )
        if not check.available:
            return _error(check.message)
        if check.valid:
            return _pass(check.message)
        return _fail(check.message)  # a bad signature fails whatever else would have vouched
    if metadata.source_type == "huggingface" and settings.approved_orgs:
        org = metadata.hf_org
        if org and org.lower() in {o.lower() for o in settings.approved_orgs}:
            return _pass(f"Hugging Face organisation {org!r} is approved")
    if metadata.source_type == "s3" and settings.approved_principals:
        principal = metadata.uploader_principal
        if principal and any(fnmatch.fnmatchcase(principal, p) for p in settings.approved_principals):
            return _pass(f"uploader {principal} is approved")
    return _fail(_author_failure(settings, metadata))


def _author_failure(settings: AuthorSettings, metadata: ArtifactMetadata) -> str:
    reasons = []
    keys = settings.trusted_public_keys
    if keys:
        reasons.append("no signature found (<artifact>.sig or model.sig)")
    if metadata.source_type == "huggingface" and settings.approved_orgs:
        reasons.append(f"organisation {metadata.hf_org or '(unknown repo)'} is not approved")
    if metadata.source_type == "s3" and settings.approved_principals:
        reasons.append(f"uploader {metadata.uploader_principal or '(unknown)'} is not approved")
    if not reasons:
        reasons.append(
            f"nothing can verify a {metadata.source_type} artifact's author: configure trusted_public_keys"
            + (", approved_orgs" if metadata.source_type == "huggingface" else "")
            + (", approved_principals" if metadata.source_type == "s3" else "")
        )
    return "author not verified: " + "; ".join(reasons)


def _size_rule(setting: SizeRuleSetting, report: ScanReport, **_: object) -> _Outcome:
    limit = setting.settings.max_bytes
    if report.size <= limit:
        return _pass(f"{report.size} bytes (limit {limit})")
    return _fail(f"{report.size} bytes is over the group's limit of {limit}")


def _hash_rule(
    setting: HashPinRuleSetting, report: ScanReport, artifact_key: str | None = None, **_: object
) -> _Outcome:
    settings = setting.settings
    if not settings.denied_sha256 and not settings.pinned:
        return _pass("no digests denied or pinned")
    if not report.sha256:
        return _error("the artifact has no sha256 to check")
    digest = report.sha256.lower()
    if digest in settings.denied_sha256:
        return _fail(f"sha256 {digest} is denied")
    key = artifact_key if artifact_key is not None else report.path
    patterns = [p for p in settings.pinned if fnmatch.fnmatchcase(key, p)]
    if not patterns:
        return _pass("not denied; no pin covers this key")
    allowed = {d for p in patterns for d in settings.pinned[p]}
    if digest in allowed:
        return _pass(f"sha256 matches the pin for {', '.join(patterns)}")
    return _fail(f"sha256 {digest} is not pinned for {key} (pins: {', '.join(patterns)})")


_RuleFn = Callable[..., _Outcome]
_RULES: dict[RuleId, _RuleFn] = {
    **dict.fromkeys(SCANNER_RULES, _findings_rule),
    RuleId.LICENSE: _license_rule,
    RuleId.FORMAT_SAFE: _format_rule,
    RuleId.AUTHOR_VERIFIED: _author_rule,
    RuleId.SIZE_LIMIT: _size_rule,
    RuleId.HASH_PIN: _hash_rule,
}


def _evaluate_rule(
    setting: RuleSettingModel, report: ScanReport, metadata: ArtifactMetadata, artifact_key: str | None
) -> RuleResult:
    rule = setting.rule
    if not setting.enabled:
        return RuleResult(
            rule=rule,
            status=RuleStatus.SKIPPED,
            blocking=setting.blocking,
            severity=setting.effective_severity,
            message="disabled in this group",
        )
    try:
        outcome = _RULES[rule](setting, report=report, metadata=metadata, artifact_key=artifact_key)
    except Exception as exc:  # fail closed: a rule bug is an ERROR, not a pass
        outcome = _error(f"rule could not be evaluated: {type(exc).__name__}: {exc}")
    severity = setting.severity
    if severity is None:
        severity = outcome.severity or CATALOG[rule].default_severity
    return RuleResult(
        rule=rule,
        status=outcome.status,
        blocking=setting.blocking,
        severity=severity,
        message=outcome.message,
        findings=outcome.findings,
    )


def verdict_for(results: list[RuleResult]) -> tuple[Verdict, str]:
    """The verdict table, with the one-line reason."""
    incomplete = [r for r in results if r.rule == RuleId.SCAN_INCOMPLETE and r.status == RuleStatus.FAIL]
    if incomplete:
        return Verdict.ERROR, f"scan incomplete: {incomplete[0].message}"
    errored = [r for r in results if r.status == RuleStatus.ERROR and r.blocking]
    if errored:
        return Verdict.ERROR, f"{errored[0].rule} could not be evaluated: {errored[0].message}"
    blocked = [r for r in results if r.status == RuleStatus.FAIL and r.blocking]
    if blocked:
        names = ", ".join(r.rule.value for r in blocked)
        return Verdict.BLOCKED, f"blocked by {names}: {blocked[0].message}"
    warned = [r for r in results if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]
    if warned:
        return Verdict.ALLOWED_WITH_WARNINGS, "warnings: " + ", ".join(r.rule.value for r in warned)
    return Verdict.ALLOWED, "all rules passed"


def evaluate(
    report: ScanReport, group: SecurityGroup, metadata: ArtifactMetadata, *, artifact_key: str | None = None
) -> Evaluation:
    """Every rule of `group` (catalogue order) against the report and metadata, and the verdict."""
    results = [_evaluate_rule(s, report, metadata, artifact_key) for s in group.effective_rules()]
    verdict, message = verdict_for(results)
    return Evaluation(
        verdict=verdict, group=group.name, group_version=group.version, rules=results, message=message
    )
