"""Evaluate a scan report against a security group: every rule's status, then the verdict.

The verdict table (fail closed):
- ERROR: an MS-SCAN-INCOMPLETE finding, or a blocking rule that could not be evaluated.
- BLOCKED: a blocking rule failed.
- ALLOWED_WITH_WARNINGS: only non-blocking rules failed or errored.
- ALLOWED: nothing failed.
A non-blocking rule that errors is a warning, not an ERROR verdict: its worst outcome is a warning,
so making it block would contradict the group (e.g. an audit group whose author check cannot run).
Rule functions never raise out of evaluate(): a bug in one becomes that rule's ERROR. The rules
themselves (spec and evaluation) are in `rules.py`.
"""

from __future__ import annotations

from pydantic import BaseModel

from modelshield.models import Format, RuleId, RuleResult, RuleStatus, ScanReport, Verdict
from modelshield.policy.catalog import CATALOG, evaluation
from modelshield.policy.groups import RuleSettingModel, SecurityGroup
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.policy.rule_registry import errored


class Evaluation(BaseModel):
    verdict: Verdict
    group: str
    group_version: int
    rules: list[RuleResult]
    message: str = ""  # one line: why the verdict is what it is

    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status in (RuleStatus.FAIL, RuleStatus.ERROR)]


# A detached signature is evidence about the model beside it, not a model: the provenance and compliance
# rules apply to that model (MS-AUTHOR-VERIFIED reads this file when the model is scanned), not to it.
SIDECAR_SKIPPED = frozenset({RuleId.LICENSE, RuleId.FORMAT_SAFE, RuleId.AUTHOR_VERIFIED})
SIDECAR_MESSAGE = (
    "not a model: a detached signature, checked when the model it signs is scanned (MS-AUTHOR-VERIFIED)"
)


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
    if report.format is Format.SIGNATURE and rule in SIDECAR_SKIPPED:
        return RuleResult(
            rule=rule,
            status=RuleStatus.SKIPPED,
            blocking=setting.blocking,
            severity=setting.effective_severity,
            message=SIDECAR_MESSAGE,
        )
    try:
        outcome = evaluation(rule)(setting, report=report, metadata=metadata, artifact_key=artifact_key)
    except Exception as exc:  # fail closed: a rule bug is an ERROR, not a pass
        outcome = errored(f"rule could not be evaluated: {type(exc).__name__}: {exc}")
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
    if report.format is Format.SIGNATURE and verdict is Verdict.ALLOWED:
        message = SIDECAR_MESSAGE
    return Evaluation(
        verdict=verdict, group=group.name, group_version=group.version, rules=results, message=message
    )
