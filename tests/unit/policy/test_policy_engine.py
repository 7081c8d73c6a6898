"""The policy engine: each rule enabled/disabled x blocking/non-blocking, rule details, the verdict table.

Reports are built by hand (no scanner involved), so these tests pin the engine's behaviour alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from modelshield.models import Finding, Format, RuleId, RuleResult, RuleStatus, ScanReport, Severity, Verdict
from modelshield.policy import engine, rule_registry
from modelshield.policy.catalog import CATALOG, MANDATORY_RULES
from modelshield.policy.engine import evaluate, verdict_for
from modelshield.policy.groups import SecurityGroup, content_safety_group, default_groups
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.policy.rules import license_approved

BAD_SHA = "b" * 64
GOOD_SHA = "a" * 64


def make_report(
    *findings: Finding,
    fmt: Format = Format.SAFETENSORS,
    formats: list[str] | None = None,
    size: int = 100,
    sha256: str | None = GOOD_SHA,
    **metadata: Any,
) -> ScanReport:
    meta: dict[str, Any] = {"formats": formats if formats is not None else [fmt.value], **metadata}
    return ScanReport(
        path="model.bin", format=fmt, size=size, sha256=sha256, findings=list(findings), metadata=meta
    )


def finding(rule: RuleId, severity: Severity = Severity.HIGH, message: str = "found it") -> Finding:
    return Finding(rule=rule, severity=severity, message=message, location="model.bin@12")


def only(rule: RuleId, *, enabled: bool = True, blocking: bool = True, **body: Any) -> SecurityGroup:
    """A group where every non-mandatory rule except `rule` is off, so verdicts depend on `rule` alone."""
    rules: dict[str, Any] = {r.value: {"enabled": False} for r in CATALOG if r not in MANDATORY_RULES}
    rules[rule.value] = {"enabled": enabled, "blocking": blocking, **body}
    return SecurityGroup.model_validate({"name": "test", "version": 7, "rules": rules})


@dataclass(frozen=True)
class Case:
    """How to make one rule pass and fail: the settings, then (report, metadata) for each outcome."""

    settings: dict[str, Any]
    passing: Callable[[], tuple[ScanReport, ArtifactMetadata]]
    failing: Callable[[], tuple[ScanReport, ArtifactMetadata]]


def _scanner_case(rule: RuleId) -> Case:
    return Case(
        {},
        lambda: (make_report(), ArtifactMetadata()),
        lambda: (make_report(finding(rule)), ArtifactMetadata()),
    )


CASES: dict[RuleId, Case] = {
    **{rule: _scanner_case(rule) for rule in CATALOG if CATALOG[rule].kind == "scanner"},
    RuleId.LICENSE: Case(
        {"approved_licenses": ["mit"]},
        lambda: (make_report(), ArtifactMetadata(license="MIT")),
        lambda: (make_report(), ArtifactMetadata(license="gpl-3.0")),
    ),
    RuleId.FORMAT_SAFE: Case(
        {"approved_formats": ["safetensors"], "pickle_based": "deny"},
        lambda: (make_report(), ArtifactMetadata()),
        lambda: (make_report(fmt=Format.PICKLE), ArtifactMetadata()),
    ),
    RuleId.AUTHOR_VERIFIED: Case(
        {"approved_orgs": ["google"]},
        lambda: (make_report(), ArtifactMetadata(source_type="huggingface", hf_repo="google/gemma")),
        lambda: (make_report(), ArtifactMetadata(source_type="huggingface", hf_repo="mallory/gemma")),
    ),
    RuleId.SIZE_LIMIT: Case(
        {"max_bytes": 1000},
        lambda: (make_report(size=1000), ArtifactMetadata()),
        lambda: (make_report(size=1001), ArtifactMetadata()),
    ),
    RuleId.HASH_PIN: Case(
        {"denied_sha256": [BAD_SHA]},
        lambda: (make_report(sha256=GOOD_SHA), ArtifactMetadata()),
        lambda: (make_report(sha256=BAD_SHA), ArtifactMetadata()),
    ),
}


def result_for(evaluation: engine.Evaluation, rule: RuleId) -> RuleResult:
    return next(r for r in evaluation.rules if r.rule == rule)


def test_every_catalogued_rule_has_a_case_and_an_implementation() -> None:
    assert set(CASES) == set(RuleId) == set(CATALOG)


# -- the matrix: enabled/disabled x blocking/non-blocking, for every rule -----------------------------------
@pytest.mark.parametrize("rule", list(RuleId), ids=str)
def test_enabled_blocking_rule_that_fails_blocks(rule: RuleId) -> None:
    # Given a group where only `rule` is configured, blocking
    group = only(rule, settings=CASES[rule].settings)
    # When an artifact fails it
    report, metadata = CASES[rule].failing()
    evaluation = evaluate(report, group, metadata)
    # Then the rule fails and the artifact is blocked (an incomplete scan is an ERROR)
    assert result_for(evaluation, rule).status == RuleStatus.FAIL
    expected = Verdict.ERROR if rule == RuleId.SCAN_INCOMPLETE else Verdict.BLOCKED
    assert evaluation.verdict == expected
    assert not evaluation.verdict.releases


@pytest.mark.parametrize("rule", list(RuleId), ids=str)
def test_enabled_rule_passes_when_the_artifact_complies(rule: RuleId) -> None:
    # Given the same blocking rule, when the artifact complies
    report, metadata = CASES[rule].passing()
    evaluation = evaluate(report, only(rule, settings=CASES[rule].settings), metadata)
    # Then it passes and the artifact is allowed
    assert result_for(evaluation, rule).status == RuleStatus.PASS
    assert evaluation.verdict == Verdict.ALLOWED


@pytest.mark.parametrize("rule", [r for r in RuleId if r not in MANDATORY_RULES], ids=str)
def test_non_blocking_rule_that_fails_only_warns(rule: RuleId) -> None:
    # Given the rule enabled but non-blocking
    group = only(rule, blocking=False, settings=CASES[rule].settings)
    # When the artifact fails it
    report, metadata = CASES[rule].failing()
    evaluation = evaluate(report, group, metadata)
    # Then it is reported as a failure, but the artifact is released with warnings
    result = result_for(evaluation, rule)
    assert (result.status, result.blocking) == (RuleStatus.FAIL, False)
    assert evaluation.verdict == Verdict.ALLOWED_WITH_WARNINGS


@pytest.mark.parametrize("blocking", [True, False])
@pytest.mark.parametrize("rule", [r for r in RuleId if r not in MANDATORY_RULES], ids=str)
def test_disabled_rule_is_skipped_even_when_it_would_fail(rule: RuleId, blocking: bool) -> None:
    # Given the rule disabled (blocking or not)
    group = only(rule, enabled=False, blocking=blocking, settings=CASES[rule].settings)
    # When the artifact would fail it
    report, metadata = CASES[rule].failing()
    evaluation = evaluate(report, group, metadata)
    # Then it is skipped and does not affect the verdict
    assert result_for(evaluation, rule).status == RuleStatus.SKIPPED
    assert evaluation.verdict == Verdict.ALLOWED


@pytest.mark.parametrize("rule", sorted(MANDATORY_RULES), ids=str)
@pytest.mark.parametrize(("enabled", "blocking"), [(False, True), (True, False), (False, False)])
def test_mandatory_rules_cannot_be_disabled_or_made_non_blocking(
    rule: RuleId, enabled: bool, blocking: bool
) -> None:
    with pytest.raises(ValueError, match=f"{rule} is mandatory"):
        only(rule, enabled=enabled, blocking=blocking)


def test_evaluation_names_the_group_and_its_version_and_lists_every_rule_in_catalogue_order() -> None:
    evaluation = evaluate(make_report(), only(RuleId.LICENSE), ArtifactMetadata(license="mit"))
    assert (evaluation.group, evaluation.group_version) == ("test", 7)
    assert [r.rule for r in evaluation.rules] == list(CATALOG)


# -- scanner rules -------------------------------------------------------------------------------------------
def test_scanner_rule_counts_only_findings_at_or_above_min_severity() -> None:
    # Given MS-CODE-UNKNOWN counting only medium and above
    group = only(RuleId.CODE_UNKNOWN, settings={"min_severity": "medium"})
    low, high = (
        finding(RuleId.CODE_UNKNOWN, Severity.LOW, "low one"),
        finding(RuleId.CODE_UNKNOWN, Severity.HIGH),
    )
    # When only a low finding exists, the rule passes (and says why)
    passed = result_for(evaluate(make_report(low), group, ArtifactMetadata()), RuleId.CODE_UNKNOWN)
    assert passed.status == RuleStatus.PASS and "below medium" in passed.message
    # When a high one is added, the rule fails carrying only the counted finding
    failed = result_for(evaluate(make_report(low, high), group, ArtifactMetadata()), RuleId.CODE_UNKNOWN)
    assert failed.status == RuleStatus.FAIL
    assert failed.findings == [high]
    assert failed.severity == Severity.HIGH
    # And a finding exactly at the threshold counts
    medium = finding(RuleId.CODE_UNKNOWN, Severity.MEDIUM)
    at = result_for(evaluate(make_report(medium), group, ArtifactMetadata()), RuleId.CODE_UNKNOWN)
    assert at.status == RuleStatus.FAIL


def test_scanner_rule_ignores_findings_of_other_rules_and_reports_the_worst_severity() -> None:
    report = make_report(
        finding(RuleId.CODE_EXEC, Severity.MEDIUM, "first"),
        finding(RuleId.CODE_EXEC, Severity.CRITICAL, "second"),
        finding(RuleId.BACKDOOR),
    )
    result = result_for(evaluate(report, only(RuleId.CODE_EXEC), ArtifactMetadata()), RuleId.CODE_EXEC)
    assert len(result.findings) == 2
    assert result.severity == Severity.CRITICAL
    assert result.message == "first (+1 more)"


def test_severity_override_replaces_the_reported_severity() -> None:
    group = only(RuleId.CODE_UNKNOWN, severity="low")
    result = result_for(
        evaluate(make_report(finding(RuleId.CODE_UNKNOWN)), group, ArtifactMetadata()), RuleId.CODE_UNKNOWN
    )
    assert result.severity == Severity.LOW


# -- MS-LICENSE ----------------------------------------------------------------------------------------------
def test_license_missing_fails_and_any_declared_license_passes_without_an_approved_list() -> None:
    group = only(RuleId.LICENSE)
    missing = result_for(evaluate(make_report(), group, ArtifactMetadata()), RuleId.LICENSE)
    assert missing.status == RuleStatus.FAIL and "no license" in missing.message
    declared = result_for(evaluate(make_report(), group, ArtifactMetadata(license="WTFPL")), RuleId.LICENSE)
    assert declared.status == RuleStatus.PASS


@pytest.mark.parametrize(
    ("metadata", "report_license", "source"),
    [
        (ArtifactMetadata(user_metadata={"license": "mit"}), None, "object metadata"),
        (ArtifactMetadata(), "MIT", "safetensors metadata"),
        (ArtifactMetadata(license="mit"), "gpl-3.0", "metadata"),  # explicit beats embedded
    ],
)
def test_license_is_read_from_metadata_then_embedded_metadata(
    metadata: ArtifactMetadata, report_license: str | None, source: str
) -> None:
    extra = {"license": report_license} if report_license else {}
    group = only(RuleId.LICENSE, settings={"approved_licenses": ["MIT"]})
    result = result_for(evaluate(make_report(**extra), group, metadata), RuleId.LICENSE)
    assert result.status == RuleStatus.PASS
    assert f"from {source}" in result.message


@pytest.mark.parametrize(
    ("expression", "approved"),
    [
        ("Apache-2.0", True),
        ("gpl-3.0 OR mit", True),
        ("(mit AND apache-2.0)", True),
        ("mit AND gpl-3.0", False),
        ("other", False),
    ],
)
def test_license_expressions(expression: str, approved: bool) -> None:
    assert license_approved(expression, ["apache-2.0", "mit"]) is approved


# -- MS-FORMAT-SAFE ------------------------------------------------------------------------------------------
def test_format_rule_checks_every_nested_format_but_not_inert_text() -> None:
    group = only(RuleId.FORMAT_SAFE, settings={"approved_formats": ["keras", "keras-h5"]})
    keras = make_report(fmt=Format.KERAS, formats=["keras", "text", "keras-h5"])
    assert (
        result_for(evaluate(keras, group, ArtifactMetadata()), RuleId.FORMAT_SAFE).status == RuleStatus.PASS
    )
    smuggled = make_report(fmt=Format.ZIP, formats=["zip", "keras-h5"])
    failed = result_for(evaluate(smuggled, group, ArtifactMetadata()), RuleId.FORMAT_SAFE)
    assert failed.status == RuleStatus.FAIL and "zip" in failed.message


def test_pickle_deny_catches_a_pickle_nested_in_an_otherwise_approved_container() -> None:
    group = only(RuleId.FORMAT_SAFE, settings={"pickle_based": "deny"})
    report = make_report(fmt=Format.ZIP, formats=["zip", "pytorch-zip", "pickle"])
    result = result_for(evaluate(report, group, ArtifactMetadata()), RuleId.FORMAT_SAFE)
    assert result.status == RuleStatus.FAIL
    assert "pytorch-zip, pickle" in result.message


def test_format_rule_falls_back_to_the_report_format_without_formats_metadata() -> None:
    report = ScanReport(path="m", format=Format.PICKLE, size=1, sha256=GOOD_SHA)
    group = only(RuleId.FORMAT_SAFE, settings={"approved_formats": ["safetensors"]})
    assert (
        result_for(evaluate(report, group, ArtifactMetadata()), RuleId.FORMAT_SAFE).status == RuleStatus.FAIL
    )


# -- MS-AUTHOR-VERIFIED (signatures: test_policy_signing.py) ------------------------------------------
@pytest.mark.parametrize(
    ("principal", "status"),
    [
        ("arn:aws:sts::123456789012:assumed-role/Publisher/alice", RuleStatus.PASS),
        ("arn:aws:sts::123456789012:assumed-role/Intern/bob", RuleStatus.FAIL),
        ("AWS:AROAPUBLISHER:alice", RuleStatus.PASS),  # the S3 event's principalId form
        ("AWS:AROAINTERN:alice", RuleStatus.FAIL),
        (None, RuleStatus.FAIL),
    ],
)
def test_author_from_an_approved_s3_uploader(principal: str | None, status: RuleStatus) -> None:
    group = only(
        RuleId.AUTHOR_VERIFIED,
        settings={"approved_principals": ["arn:aws:sts::*:assumed-role/Publisher/*", "AWS:AROAPUBLISHER:*"]},
    )
    metadata = ArtifactMetadata(source_type="s3", uploader_principal=principal)
    assert result_for(evaluate(make_report(), group, metadata), RuleId.AUTHOR_VERIFIED).status == status


def test_approved_orgs_do_not_vouch_for_an_s3_upload_and_the_message_says_what_to_configure() -> None:
    # Given only HF orgs configured, when an S3 upload claims an approved repo id
    group = only(RuleId.AUTHOR_VERIFIED, settings={"approved_orgs": ["google"]})
    metadata = ArtifactMetadata(source_type="s3", hf_repo="google/gemma")
    result = result_for(evaluate(make_report(), group, metadata), RuleId.AUTHOR_VERIFIED)
    # Then it is not verified (the org claim only counts for huggingface sources)
    assert result.status == RuleStatus.FAIL
    assert "approved_principals" in result.message


def test_author_claimed_in_metadata_verifies_nothing() -> None:
    group = only(RuleId.AUTHOR_VERIFIED, settings={"approved_orgs": ["google"]})
    metadata = ArtifactMetadata(source_type="huggingface", author="google")
    assert (
        result_for(evaluate(make_report(), group, metadata), RuleId.AUTHOR_VERIFIED).status == RuleStatus.FAIL
    )


# -- MS-HASH-PIN ---------------------------------------------------------------------------------------------
def test_hash_pin_requires_a_pinned_digest_for_matching_keys_only() -> None:
    group = only(RuleId.HASH_PIN, settings={"pinned": {"production/resnet/*": [GOOD_SHA]}})
    pinned_ok = evaluate(
        make_report(sha256=GOOD_SHA), group, ArtifactMetadata(), artifact_key="production/resnet/m.onnx"
    )
    replaced = evaluate(
        make_report(sha256=BAD_SHA), group, ArtifactMetadata(), artifact_key="production/resnet/m.onnx"
    )
    elsewhere = evaluate(
        make_report(sha256=BAD_SHA), group, ArtifactMetadata(), artifact_key="production/bert/m.onnx"
    )
    assert result_for(pinned_ok, RuleId.HASH_PIN).status == RuleStatus.PASS
    assert result_for(replaced, RuleId.HASH_PIN).status == RuleStatus.FAIL
    assert result_for(elsewhere, RuleId.HASH_PIN).status == RuleStatus.PASS


def test_hash_pin_without_a_digest_cannot_be_evaluated_and_a_blocking_error_is_an_error_verdict() -> None:
    evaluation = evaluate(
        make_report(sha256=None),
        only(RuleId.HASH_PIN, settings={"denied_sha256": [BAD_SHA]}),
        ArtifactMetadata(),
    )
    assert result_for(evaluation, RuleId.HASH_PIN).status == RuleStatus.ERROR
    assert evaluation.verdict == Verdict.ERROR


# -- failure handling and the verdict table ---------------------------------------------------------
def test_a_rule_that_raises_is_an_error_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setitem(rule_registry.EVALUATIONS, RuleId.SIZE_LIMIT, broken)
    evaluation = evaluate(make_report(), only(RuleId.SIZE_LIMIT), ArtifactMetadata())
    result = result_for(evaluation, RuleId.SIZE_LIMIT)
    assert result.status == RuleStatus.ERROR and "RuntimeError: bug" in result.message
    assert evaluation.verdict == Verdict.ERROR


def test_a_non_blocking_rule_that_errors_only_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    cannot = lambda *a, **k: rule_registry.errored("cannot")  # noqa: E731
    monkeypatch.setitem(rule_registry.EVALUATIONS, RuleId.SIZE_LIMIT, cannot)
    evaluation = evaluate(make_report(), only(RuleId.SIZE_LIMIT, blocking=False), ArtifactMetadata())
    assert evaluation.verdict == Verdict.ALLOWED_WITH_WARNINGS


def _result(rule: RuleId, status: RuleStatus, blocking: bool = True) -> RuleResult:
    return RuleResult(
        rule=rule, status=status, blocking=blocking, severity=Severity.HIGH, message=status.value
    )


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        ([], Verdict.ALLOWED),
        (
            [_result(RuleId.LICENSE, RuleStatus.PASS), _result(RuleId.SIZE_LIMIT, RuleStatus.SKIPPED)],
            Verdict.ALLOWED,
        ),
        ([_result(RuleId.LICENSE, RuleStatus.FAIL, blocking=False)], Verdict.ALLOWED_WITH_WARNINGS),
        ([_result(RuleId.LICENSE, RuleStatus.ERROR, blocking=False)], Verdict.ALLOWED_WITH_WARNINGS),
        (
            [
                _result(RuleId.LICENSE, RuleStatus.FAIL, blocking=False),
                _result(RuleId.CODE_EXEC, RuleStatus.FAIL),
            ],
            Verdict.BLOCKED,
        ),
        (
            [_result(RuleId.CODE_EXEC, RuleStatus.FAIL), _result(RuleId.HASH_PIN, RuleStatus.ERROR)],
            Verdict.ERROR,
        ),
        (
            [_result(RuleId.CODE_EXEC, RuleStatus.FAIL), _result(RuleId.SCAN_INCOMPLETE, RuleStatus.FAIL)],
            Verdict.ERROR,
        ),
    ],
)
def test_verdict_table(results: list[RuleResult], verdict: Verdict) -> None:
    assert verdict_for(results)[0] == verdict


# -- the built-in and seeded groups --------------------------------------------------------------------------
def test_content_safety_allows_a_benign_file_and_blocks_code_execution() -> None:
    group = content_safety_group()
    assert evaluate(make_report(fmt=Format.PICKLE), group, ArtifactMetadata()).verdict == Verdict.ALLOWED
    evil = make_report(finding(RuleId.CODE_EXEC, Severity.CRITICAL), fmt=Format.PICKLE)
    assert evaluate(evil, group, ArtifactMetadata()).verdict == Verdict.BLOCKED


def _seeded(name: str) -> SecurityGroup:
    return next(g for g in default_groups() if g.name == name)


def test_huggingface_research_warns_about_provenance_and_allows_an_attributed_model() -> None:
    group = _seeded("HuggingFace-Research")
    anonymous = evaluate(make_report(fmt=Format.PICKLE), group, ArtifactMetadata(source_type="huggingface"))
    assert anonymous.verdict == Verdict.ALLOWED_WITH_WARNINGS
    attributed = ArtifactMetadata(source_type="huggingface", license="apache-2.0", hf_repo="google/gemma-2b")
    assert evaluate(make_report(fmt=Format.PICKLE), group, attributed).verdict == Verdict.ALLOWED


def test_s3_production_blocks_pickle_and_unverified_authors_and_allows_a_compliant_upload() -> None:
    base = _seeded("S3-Production")
    # With no trust anchors configured, even a compliant safetensors file is blocked (fail closed)
    metadata = ArtifactMetadata(source_type="s3", license="mit", uploader_principal="arn:aws:iam::1:role/Pub")
    unverified = evaluate(make_report(), base, metadata)
    assert unverified.verdict == Verdict.BLOCKED
    assert [r.rule for r in unverified.failed()] == [RuleId.AUTHOR_VERIFIED]
    # Once the uploader is approved it is allowed, but a pickle still is not
    author = base.rules[RuleId.AUTHOR_VERIFIED]
    approved = author.model_copy(
        update={"settings": author.settings.model_copy(update={"approved_principals": ["*:role/Pub"]})}
    )
    group = base.model_copy(update={"rules": {**base.rules, RuleId.AUTHOR_VERIFIED: approved}})
    assert evaluate(make_report(), group, metadata).verdict == Verdict.ALLOWED
    pickled = evaluate(make_report(fmt=Format.PICKLE), group, metadata)
    assert [r.rule for r in pickled.failed()] == [RuleId.FORMAT_SAFE]


def test_partner_audit_only_warns_except_for_code_execution() -> None:
    group = _seeded("Partner-S3-Audit")
    unknown = make_report(finding(RuleId.CODE_UNKNOWN), fmt=Format.PICKLE)
    assert (
        evaluate(unknown, group, ArtifactMetadata(source_type="s3")).verdict == Verdict.ALLOWED_WITH_WARNINGS
    )
    evil = make_report(finding(RuleId.CODE_EXEC, Severity.CRITICAL), fmt=Format.PICKLE)
    assert evaluate(evil, group, ArtifactMetadata(source_type="s3")).verdict == Verdict.BLOCKED
