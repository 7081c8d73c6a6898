"""The rule catalogue: complete, explained, and the committed docs/rules.md generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelshield.cli import main
from modelshield.models import RuleId
from modelshield.policy import rule_registry
from modelshield.policy.catalog import (
    CATALOG,
    MANDATORY_RULES,
    SOURCE_TYPES,
    evaluation,
    rule_spec,
    settings_help,
)
from modelshield.policy.docs import render_rules_markdown
from modelshield.policy.groups import RULE_SETTING_CLASSES
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[3]


def test_every_rule_id_has_a_complete_catalogue_entry() -> None:
    assert list(CATALOG) == [spec.id for spec in CATALOG.values()]
    assert set(CATALOG) == set(RuleId)
    for spec in CATALOG.values():
        assert spec.title and spec.checks and len(spec.rationale) > 40, spec.id
        assert spec.kind in ("scanner", "policy")
        assert set(spec.metadata) == set(SOURCE_TYPES)
        assert settings_help(spec), spec.id


def test_each_rule_registers_its_evaluation_and_gets_a_setting_class_derived_from_its_spec() -> None:
    # Given the registry filled by policy/rules.py
    for rule_id, spec in CATALOG.items():
        # Then every rule has its evaluation, and its group-setting class narrows `id` to that rule
        # and defaults `settings` to the spec's settings model
        assert callable(evaluation(rule_id)), rule_id
        setting = RULE_SETTING_CLASSES[rule_id].model_validate({"id": rule_id.value})
        assert setting.rule == rule_id and type(setting.settings) is spec.settings_model
        with pytest.raises(ValidationError):
            other = next(r for r in CATALOG if r != rule_id)
            RULE_SETTING_CLASSES[rule_id].model_validate({"id": other.value})


def test_a_rule_cannot_be_registered_twice() -> None:
    # Given an already registered rule id
    spec = CATALOG[RuleId.SIZE_LIMIT]
    # When it is registered again, Then the registry refuses (one home per rule)
    with pytest.raises(ValueError, match="registered twice"):
        rule_registry.rule(spec)(lambda *a, **k: None)  # type: ignore[arg-type, return-value]
    assert evaluation(RuleId.SIZE_LIMIT).__name__ == "size_rule"


def test_mandatory_rules_are_exactly_incomplete_and_malformed_and_on_by_default() -> None:
    assert MANDATORY_RULES == {RuleId.SCAN_INCOMPLETE, RuleId.MALFORMED}
    assert all(CATALOG[r].default_enabled and CATALOG[r].default_blocking for r in MANDATORY_RULES)


def test_rule_lookup_is_case_insensitive_and_names_known_ids_on_error() -> None:
    assert rule_spec("ms-code-exec").id == RuleId.CODE_EXEC
    with pytest.raises(KeyError, match="known: MS-SCAN-INCOMPLETE"):
        rule_spec("MS-NOPE")


def test_committed_rules_doc_matches_the_catalogue() -> None:
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert committed == render_rules_markdown(), (
        "docs/rules.md is stale: run `python -m modelshield.policy.docs > docs/rules.md`"
    )


def test_rules_doc_has_a_row_and_a_section_per_rule() -> None:
    doc = render_rules_markdown()
    for rule in RuleId:
        assert f"| [{rule.value}](#{rule.value.lower()}) |" in doc
        assert f"### {rule.value}\n" in doc


def test_explain_prints_rationale_settings_and_group_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "MS-FORMAT-SAFE"]) == 0
    out = capsys.readouterr().out
    assert CATALOG[RuleId.FORMAT_SAFE].rationale in out
    assert "pickle_based" in out
    assert "S3-Production" in out and "blocking" in out


def test_scan_explain_flag_works_without_paths_and_unknown_rules_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["scan", "--explain", "MS-MALFORMED"]) == 0
    assert "mandatory" in capsys.readouterr().out
    assert main(["explain", "MS-NOPE"]) == 2
    assert "unknown rule id" in capsys.readouterr().err
