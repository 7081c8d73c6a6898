"""SARIF 2.1.0 output: structure, rule descriptors from the catalogue, levels, locations and suppressions.

The structural schema below is a hand-written subset of SARIF 2.1.0 covering what ModelShield emits
(required properties and enumerations), checked with jsonschema.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from modelshield.models import Finding, Format, RuleId, ScanReport, Severity
from modelshield.policy.catalog import CATALOG
from modelshield.policy.engine import evaluate
from modelshield.policy.groups import SecurityGroup, content_safety_group
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.sarif import file_uri, level, sarif_log, split_location

MESSAGE = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
LOCATION = {
    "type": "object",
    "properties": {
        "physicalLocation": {
            "type": "object",
            "required": ["artifactLocation"],
            "properties": {
                "artifactLocation": {
                    "type": "object",
                    "required": ["uri"],
                    "properties": {"uri": {"type": "string"}},
                },
                "region": {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {"byteOffset": {"type": "integer", "minimum": 0}},
                },
            },
        },
        "logicalLocations": {
            "type": "array",
            "items": {"type": "object", "properties": {"fullyQualifiedName": {"type": "string"}}},
        },
    },
}
SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": MESSAGE,
                                                "fullDescription": MESSAGE,
                                                "help": MESSAGE,
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {
                                                            "enum": ["none", "note", "warning", "error"]
                                                        }
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": 0},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": MESSAGE,
                                "locations": {"type": "array", "items": LOCATION},
                                "suppressions": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["kind"],
                                        "properties": {"kind": {"enum": ["inSource", "external"]}},
                                    },
                                },
                            },
                        },
                    },
                    "artifacts": {"type": "array"},
                    "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                },
            },
        },
    },
}


def report(*findings: Finding, path: str = "models/m.zip", **metadata: object) -> ScanReport:
    return ScanReport(
        path=path, format=Format.ZIP, size=10, sha256="c" * 64, findings=list(findings), metadata=metadata
    )


def log_for(
    scan: ScanReport, group: SecurityGroup | None = None, metadata: ArtifactMetadata | None = None
) -> dict:
    evaluation = evaluate(scan, group or content_safety_group(), metadata or ArtifactMetadata())
    log = sarif_log([(scan, evaluation)])
    jsonschema.validate(log, SARIF_SUBSET)
    json.dumps(log)  # must serialise as-is
    return log


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.CRITICAL, "error"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "note"),
        (Severity.INFO, "note"),
    ],
)
def test_levels_follow_severity(severity: Severity, expected: str) -> None:
    assert level(severity) == expected


@pytest.mark.parametrize(
    ("location", "member", "offset"),
    [
        ("models/m.zip", None, None),
        ("models/m.zip@77", None, 77),
        ("models/m.zip!a/b.pkl", "a/b.pkl", None),
        ("models/m.zip!a/b.pkl@5", "a/b.pkl", 5),
        ("models/m.zip!a/b@c.pkl", "a/b@c.pkl", None),  # '@' not followed by digits is part of the name
        ("models/m.zip!x.tar!y.pkl@1", "x.tar!y.pkl", 1),
    ],
)
def test_locations_split_into_member_and_offset(
    location: str, member: str | None, offset: int | None
) -> None:
    assert split_location("models/m.zip", location) == (member, offset)


def test_uris_stay_relative_and_are_escaped_and_absolute_paths_become_file_uris() -> None:
    assert file_uri("models/my model.pkl") == "models/my%20model.pkl"
    assert file_uri("/srv/m.pkl") == "file:///srv/m.pkl"


def test_the_driver_describes_every_catalogued_rule() -> None:
    driver = log_for(report())["runs"][0]["tool"]["driver"]
    assert driver["name"] == "ModelShield"
    rules = {r["id"]: r for r in driver["rules"]}
    assert set(rules) == {r.value for r in RuleId}
    exec_rule = rules["MS-CODE-EXEC"]
    spec = CATALOG[RuleId.CODE_EXEC]
    assert exec_rule["shortDescription"]["text"] == spec.title
    assert exec_rule["fullDescription"]["text"] == spec.checks
    assert exec_rule["help"]["text"] == spec.rationale
    assert exec_rule["defaultConfiguration"]["level"] == "error"


def test_a_clean_file_has_no_results_but_is_listed_as_an_artifact() -> None:
    run = log_for(report())["runs"][0]
    assert run["results"] == []
    assert run["artifacts"][0]["location"]["uri"] == "models/m.zip"
    assert run["artifacts"][0]["properties"]["verdict"] == "ALLOWED"


def test_a_top_level_finding_has_a_byte_offset_and_a_nested_one_a_logical_location() -> None:
    top = Finding(
        rule=RuleId.MALFORMED, severity=Severity.MEDIUM, message="trailing data", location="models/m.zip@40"
    )
    nested = Finding(
        rule=RuleId.CODE_EXEC,
        severity=Severity.CRITICAL,
        message="os.system",
        location="models/m.zip!inner/data.pkl@2",
    )
    results = log_for(report(top, nested))["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}
    malformed, code_exec = by_rule["MS-MALFORMED"], by_rule["MS-CODE-EXEC"]
    assert malformed["level"] == "warning"
    assert malformed["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "models/m.zip"},
        "region": {"byteOffset": 40},
    }
    # The offset of a nested finding is inside the member, so no region on the outer file
    assert code_exec["level"] == "error" and code_exec["message"]["text"] == "os.system"
    assert "region" not in code_exec["locations"][0]["physicalLocation"]
    assert code_exec["locations"][0]["logicalLocations"] == [
        {"fullyQualifiedName": "models/m.zip!inner/data.pkl@2", "kind": "member"}
    ]
    assert code_exec["ruleIndex"] == list(CATALOG).index(RuleId.CODE_EXEC)
    assert code_exec["properties"]["verdict"] == "BLOCKED"


def test_a_policy_failure_without_findings_is_reported_against_the_file() -> None:
    group = SecurityGroup.model_validate({"name": "g", "rules": {"MS-LICENSE": {"blocking": False}}})
    (result,) = log_for(report(), group)["runs"][0]["results"]
    assert result["ruleId"] == "MS-LICENSE" and result["level"] == "warning"
    assert "no license declared" in result["message"]["text"]
    assert result["properties"]["blocking"] is False


def test_findings_that_did_not_count_are_kept_as_suppressed_results() -> None:
    # Given a group that disables MS-CODE-UNKNOWN, and a report with such a finding
    group = SecurityGroup.model_validate(
        {"name": "lenient", "rules": {"MS-CODE-UNKNOWN": {"enabled": False}}}
    )
    unknown = Finding(
        rule=RuleId.CODE_UNKNOWN, severity=Severity.HIGH, message="imports foo.bar", location="models/m.zip"
    )
    (result,) = log_for(report(unknown), group)["runs"][0]["results"]
    # Then it appears, marked as suppressed with the reason
    assert result["ruleId"] == "MS-CODE-UNKNOWN"
    assert result["suppressions"] == [{"kind": "external", "justification": "rule disabled in group lenient"}]
