"""Loading security groups from YAML: the model, the defaults, and errors that name file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelshield.errors import UsageError
from modelshield.models import Format, RuleId, Severity
from modelshield.policy import groups as groups_module
from modelshield.policy.catalog import CATALOG, MANDATORY_RULES
from modelshield.policy.groups import (
    MAX_YAML_NODES,
    SecurityGroup,
    content_safety_group,
    default_groups,
    load_groups,
)

SEEDED = Path(groups_module.__file__).with_name("default_groups.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UsageError) as info:
        load_groups(write(tmp_path, text))
    return str(info.value)


# -- valid files ---------------------------------------------------------------------------------------------
def test_a_full_group_loads_with_typed_settings(tmp_path: Path) -> None:
    # Given a group that sets every kind of field
    path = write(
        tmp_path,
        """
        groups:
          - name: Vision
            description: image models
            version: 4
            kms_key_id: alias/vision
            max_data_key_age_days: 90
            sources:
              - {type: s3, bucket: ingest-bucket, prefix: production/vision/}
            rules:
              MS-CODE-UNKNOWN: {severity: medium, settings: {min_severity: low}}
              MS-LICENSE: {blocking: false, settings: {approved_licenses: [Apache-2.0, MIT]}}
              MS-FORMAT-SAFE: {settings: {approved_formats: [safetensors, onnx], pickle_based: deny}}
              MS-SIZE-LIMIT: {settings: {max_bytes: 2 GiB}}
        """,
    )
    # When it is loaded
    (group,) = load_groups(path)
    # Then every value arrives typed and normalised
    assert (group.name, group.version, group.kms_key_id, group.max_data_key_age_days) == (
        "Vision",
        4,
        "alias/vision",
        90,
    )
    assert group.sources[0].bucket == "ingest-bucket" and group.sources[0].prefix == "production/vision/"
    unknown = group.rule(RuleId.CODE_UNKNOWN)
    assert unknown.severity == Severity.MEDIUM and unknown.settings.min_severity == Severity.LOW
    license_rule = group.rule(RuleId.LICENSE)
    assert (license_rule.enabled, license_rule.blocking) == (True, False)
    assert license_rule.settings.approved_licenses == ["apache-2.0", "mit"]
    assert group.rule(RuleId.FORMAT_SAFE).settings.approved_formats == [Format.SAFETENSORS, Format.ONNX]
    assert group.rule(RuleId.SIZE_LIMIT).settings.max_bytes == 2 * 1024**3


def test_listed_rules_default_to_enabled_and_blocking_and_unlisted_rules_to_the_catalogue(
    tmp_path: Path,
) -> None:
    (group,) = load_groups(write(tmp_path, "groups:\n  - name: g\n    rules:\n      MS-HASH-PIN:\n"))
    assert (group.rule(RuleId.HASH_PIN).enabled, group.rule(RuleId.HASH_PIN).blocking) == (True, True)
    for rule, spec in CATALOG.items():
        if rule != RuleId.HASH_PIN:
            assert (group.rule(rule).enabled, group.rule(rule).blocking) == (
                spec.default_enabled,
                spec.default_blocking,
            )


def test_yaml_text_and_a_bare_list_are_accepted() -> None:
    groups = load_groups("- name: a\n- name: b\n  rules: {MS-LICENSE: {enabled: true}}\n")
    assert [g.name for g in groups] == ["a", "b"]


def test_ingest_bucket_placeholder_is_substituted_or_matches_any_bucket() -> None:
    text = 'groups:\n  - name: g\n    sources: [{type: s3, bucket: "${IngestBucket}", prefix: p/}]\n'
    assert load_groups(text, ingest_bucket="my-ingest")[0].sources[0].bucket == "my-ingest"
    assert load_groups(text)[0].sources[0].bucket == "*"


def test_a_stored_group_round_trips_through_json() -> None:
    (group,) = default_groups(ingest_bucket="bucket-1")[1:2]
    assert SecurityGroup.model_validate(group.model_dump(mode="json")) == group


# -- the defaults --------------------------------------------------------------------------------------------
def test_default_groups_are_the_four_seeded_ones_with_the_described_sources() -> None:
    groups = {g.name: g for g in default_groups(ingest_bucket="ingest")}
    assert list(groups) == ["HuggingFace-Research", "S3-Production", "Partner-S3-Audit", "default"]
    assert [(s.type, s.bucket, s.prefix) for s in groups["HuggingFace-Research"].sources] == [
        ("huggingface", "ingest", "huggingface/")
    ]
    assert [(s.type, s.prefix) for s in groups["S3-Production"].sources] == [("s3", "production/")]
    assert [(s.type, s.prefix) for s in groups["Partner-S3-Audit"].sources] == [("s3", "partner/")]
    assert groups["default"].sources == []


def test_s3_production_enforces_license_formats_author_and_size() -> None:
    production = next(g for g in default_groups() if g.name == "S3-Production")
    for rule in (RuleId.LICENSE, RuleId.FORMAT_SAFE, RuleId.AUTHOR_VERIFIED, RuleId.SIZE_LIMIT):
        assert production.rule(rule).enabled and production.rule(rule).blocking, rule
    assert production.rule(RuleId.LICENSE).settings.approved_licenses == ["apache-2.0", "mit", "bsd-3-clause"]
    assert production.rule(RuleId.FORMAT_SAFE).settings.pickle_based == "deny"


def test_partner_audit_blocks_only_code_exec_malformed_incomplete_and_archives() -> None:
    audit = next(g for g in default_groups() if g.name == "Partner-S3-Audit")
    blocking = {r.rule for r in audit.effective_rules() if r.enabled and r.blocking}
    assert blocking == {RuleId.CODE_EXEC, RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE, RuleId.ARCHIVE_UNSAFE}
    assert all(r.enabled for r in audit.effective_rules())


def test_default_group_and_content_safety_apply_the_same_rules() -> None:
    default = next(g for g in default_groups() if g.name == "default")
    assert default.effective_rules() == content_safety_group().effective_rules()
    blocking = {r.rule for r in default.effective_rules() if r.enabled and r.blocking}
    assert blocking == {r for r, spec in CATALOG.items() if spec.kind == "scanner" and spec.default_blocking}


# -- errors: file, line, field -------------------------------------------------------------------------------
def test_unknown_rule_id_names_file_line_and_rule(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        groups:
          - name: g
            rules:
              MS-LICENCE: {enabled: true}
        """,
    )
    assert (
        f"{tmp_path / 'groups.yaml'}:4: groups[0].rules.MS-LICENCE: unknown rule id 'MS-LICENCE'" in message
    )
    assert "MS-LICENSE" in message  # the known ids are listed


def test_a_non_boolean_blocking_value_is_rejected_with_its_line(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        groups:
          - name: g
            rules:
              MS-LICENSE:
                enabled: true
                blocking: "yes please"
        """,
    )
    assert (
        "groups.yaml:6: groups[0].rules.MS-LICENSE.blocking: must be true or false, not 'yes please'"
        in message
    )


@pytest.mark.parametrize("rule", sorted(MANDATORY_RULES), ids=str)
@pytest.mark.parametrize("field", ["enabled", "blocking"])
def test_a_mandatory_rule_cannot_be_turned_off(tmp_path: Path, rule: RuleId, field: str) -> None:
    message = load_error(
        tmp_path, f"groups:\n  - name: g\n    rules:\n      {rule}:\n        {field}: false\n"
    )
    assert f"groups.yaml:5: groups[0].rules.{rule}.{field}: {rule} is mandatory" in message


def test_a_mandatory_rule_threshold_cannot_be_raised(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      MS-MALFORMED:\n        settings: {min_severity: critical}\n",
    )
    assert "groups.yaml:5: groups[0].rules.MS-MALFORMED.settings: MS-MALFORMED is mandatory" in message


def test_unknown_fields_are_named_with_the_fields_allowed_there(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        groups:
          - name: g
            kms_key: alias/x
            rules:
              MS-LICENSE:
                settings: {aproved_licenses: [mit]}
        """,
    )
    assert (
        "groups.yaml:3: groups[0].kms_key: unknown field (allowed here: name, description, version" in message
    )
    assert (
        "groups.yaml:6: groups[0].rules.MS-LICENSE.settings.aproved_licenses: "
        "unknown field (allowed here: approved_licenses)" in message
    )


@pytest.mark.parametrize(
    ("body", "line", "field", "problem"),
    [
        (
            "sources: [{type: ftp}]",
            3,
            "groups[0].sources[0].type",
            "Input should be 's3', 'huggingface' or 'local'",
        ),
        ("sources: [{type: s3, prefix: /abs}]", 3, "groups[0].sources[0].prefix", "must not start with '/'"),
        (
            "sources: [{type: s3, bucket: Bad_Bucket}]",
            3,
            "groups[0].sources[0].bucket",
            "not an S3 bucket name",
        ),
        ("kms_key_id: my-key", 3, "groups[0].kms_key_id", "must be an alias"),
        (
            "rules: {MS-SIZE-LIMIT: {settings: {max_bytes: lots}}}",
            3,
            "groups[0].rules.MS-SIZE-LIMIT.settings.max_bytes",
            "expected a size",
        ),
        (
            "rules: {MS-HASH-PIN: {settings: {denied_sha256: [abc]}}}",
            3,
            "groups[0].rules.MS-HASH-PIN.settings.denied_sha256",
            "not a sha256",
        ),
        (
            "rules: {MS-CODE-EXEC: {severity: dire}}",
            3,
            "groups[0].rules.MS-CODE-EXEC.severity",
            "unknown severity 'dire'",
        ),
        (
            "rules: {MS-FORMAT-SAFE: {settings: {approved_formats: [exe]}}}",
            3,
            "groups[0].rules.MS-FORMAT-SAFE.settings.approved_formats[0]",
            "Input should be",
        ),
        (
            "rules: {MS-AUTHOR-VERIFIED: {settings: "
            "{trusted_public_keys: ['-----BEGIN PUBLIC KEY-----\\nnope']}}}",
            3,
            "groups[0].rules.MS-AUTHOR-VERIFIED.settings.trusted_public_keys",
            "is not a PEM public key",
        ),
    ],
)
def test_invalid_values_are_reported_at_their_line(
    tmp_path: Path, body: str, line: int, field: str, problem: str
) -> None:
    message = load_error(tmp_path, f"groups:\n  - name: g\n    {body}\n")
    assert f"groups.yaml:{line}: {field}: " in message
    assert problem in message


def test_a_missing_name_and_a_bad_top_level_are_reported(tmp_path: Path) -> None:
    assert "groups.yaml:2: groups[0].name: required field is missing" in load_error(
        tmp_path, "groups:\n  - description: x\n"
    )
    assert "expected a mapping with a `groups:` list" in load_error(tmp_path, "just text\n")


def test_duplicate_keys_are_an_error_not_a_silent_override(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      MS-LICENSE: {}\n      MS-LICENSE: {enabled: false}\n",
    )
    assert "groups.yaml:5: groups[0].rules.MS-LICENSE: duplicate key (first set on line 4)" in message


def test_duplicate_group_names_and_overlapping_sources_are_rejected(tmp_path: Path) -> None:
    assert "groups.yaml:3: groups[1].name: duplicate group name 'a'" in load_error(
        tmp_path, "groups:\n- name: a\n- name: a\n"
    )
    message = load_error(
        tmp_path,
        """
        groups:
        - name: a
          sources: [{type: s3, prefix: p/}]
        - name: b
          sources:
          - {type: s3, prefix: p/}
        """,
    )
    assert (
        "groups.yaml:6: groups[1].sources[0]: bucket '*' prefix 'p/' is already a source of group 'a'"
        in message
    )


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    assert "groups.yaml:3: YAML syntax error" in load_error(tmp_path, "groups:\n  - name: g\n  rules: [\n")


def test_alias_bombs_are_refused(tmp_path: Path) -> None:
    # Given a document whose aliases expand to far more than the node limit
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    message = load_error(tmp_path, "\n".join(lines) + "\n")
    # Then it is refused before anything is expanded
    assert f"more than {MAX_YAML_NODES} nodes" in message


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_groups(tmp_path / "nope.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["", " ", ":", "-", "[", "{", "\n", "'", "&a", "*a", "!"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_mangled_groups_file_loads_or_is_a_usage_error(edits: list[tuple[int, str]]) -> None:
    # Given the seeded groups file with random characters replaced
    text = list(SEEDED.read_text())
    for position, replacement in edits:
        text[position % len(text)] = replacement
    # Then loading never fails any other way
    try:
        load_groups("".join(text))
    except UsageError as exc:
        assert str(exc)


def test_versions_must_be_integers_not_booleans() -> None:
    with pytest.raises(UsageError, match=r"groups\[0\].version: Input should be a valid integer"):
        load_groups("groups:\n- name: a\n  version: true\n")
