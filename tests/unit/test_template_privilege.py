"""Least privilege in template.yaml, read as data: who may use the vault key, how, and on what.

moto enforces none of this (TOOLING.md), so the template itself is the thing under test. Unknown SAM
policy templates and managed policies count as "everything" here: permissions must be written out.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

# Managed policies that grant nothing on KMS, S3 objects or DynamoDB items.
HARMLESS_MANAGED = {
    "AWSLambdaBasicExecutionRole",
    "AWSXRayDaemonWriteAccess",
    "AWSLambdaSQSQueueExecutionRole",
}
VAULT_KEY = "VaultKey"
DECRYPTING = ("kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo")
S3_DATA = ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation short tags (!Ref, !GetAtt, !Sub ...) as their long form."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _mentions(value: Any, name: str) -> bool:
    return name in json.dumps(value)


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template["Resources"].items() if r.get("Type") == "AWS::Serverless::Function"}


def _role_statements(template: dict[str, Any], role_ref: Any) -> list[dict[str, Any]]:
    name = None
    if isinstance(role_ref, dict):
        target = role_ref.get("Fn::GetAtt") or role_ref.get("Ref")
        name = target[0] if isinstance(target, list) else target
    role = template["Resources"].get(name or "", {})
    if role.get("Type") != "AWS::IAM::Role":
        return [{"Effect": "Allow", "Action": "*", "Resource": "*", "_unknown_role": str(role_ref)}]
    props = role.get("Properties", {})
    out = [s for p in props.get("Policies", []) for s in _list(p["PolicyDocument"]["Statement"])]
    for managed in props.get("ManagedPolicyArns", []):
        if not any(h in json.dumps(managed) for h in HARMLESS_MANAGED):
            out.append({"Effect": "Allow", "Action": "*", "Resource": "*", "_managed": str(managed)})
    return out


def statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """Every Allow/Deny statement of a function's role (inline SAM statements or an explicit role)."""
    props = template["Resources"][function]["Properties"]
    if "Role" in props:
        return _role_statements(template, props["Role"])
    out: list[dict[str, Any]] = []
    for policy in props.get("Policies", []) or []:
        if isinstance(policy, dict) and "Statement" in policy:
            out.extend(_list(policy["Statement"]))
        elif isinstance(policy, str) and policy in HARMLESS_MANAGED:
            continue
        else:  # a SAM policy template or a managed policy: not reviewable here
            out.append({"Effect": "Allow", "Action": "*", "Resource": "*", "_template": str(policy)})
    return out


def allows(statement: dict[str, Any], action: str) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    return any(fnmatch.fnmatch(action.lower(), str(a).lower()) for a in _list(statement.get("Action", [])))


def on(statement: dict[str, Any], resource_name: str) -> bool:
    resources = _list(statement.get("Resource", []))
    return any(r == "*" or _mentions(r, resource_name) for r in resources)


def _condition_values(statement: dict[str, Any], key: str) -> list[str] | None:
    """The values a condition key is compared with, whatever the operator; None if absent."""
    for operator in (statement.get("Condition") or {}).values():
        if isinstance(operator, dict) and key in operator:
            return [str(v) for v in _list(operator[key])]
    return None


def test_the_resources_this_area_needs_exist(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in ("ScanFunction", "RotateFunction", "AuditFunction", "ApiFunction", "VaultKey", "AuditTable",
                 "AccessTable", "ArtifactsTable", "VaultBucket"):  # fmt: skip
        assert name in resources, f"template.yaml has no {name}"


def test_the_scan_role_cannot_decrypt_with_the_vault_key(template: dict[str, Any]) -> None:
    for statement in statements(template, "ScanFunction"):
        for action in DECRYPTING:
            assert not (allows(statement, action) and on(statement, VAULT_KEY)), (action, statement)


def test_only_the_rotation_role_can_decrypt_or_reencrypt_with_the_vault_key(template: dict[str, Any]) -> None:
    holders = {
        name
        for name in _functions(template)
        for statement in statements(template, name)
        for action in DECRYPTING
        if allows(statement, action) and on(statement, VAULT_KEY)
    }
    assert holders == {"RotateFunction"}


def test_no_wildcard_actions_or_resources_on_kms_or_s3_data(template: dict[str, Any]) -> None:
    for name in _functions(template):
        for statement in statements(template, name):
            if statement.get("Effect") != "Allow":
                continue
            actions = [str(a).lower() for a in _list(statement.get("Action", []))]
            touches = any(a == "*" or a.startswith("kms:") for a in actions) or any(
                fnmatch.fnmatch(d.lower(), a) for d in S3_DATA for a in actions
            )
            if not touches:
                continue
            assert not {"*", "kms:*", "s3:*"} & set(actions), (name, statement)
            assert "*" not in _list(statement.get("Resource")), (name, statement)


def test_vault_key_use_in_roles_is_constrained_by_encryption_context(template: dict[str, Any]) -> None:
    uses = ("kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:CreateGrant", *DECRYPTING)
    for name in _functions(template):
        for statement in statements(template, name):
            if any(allows(statement, a) for a in uses) and on(statement, VAULT_KEY):
                condition = json.dumps(statement.get("Condition", {}))
                assert "kms:EncryptionContext" in condition or "kms:GrantConstraintType" in condition, (
                    name,
                    statement,
                )


def test_the_key_policy_refuses_data_key_use_without_an_artifact_context(template: dict[str, Any]) -> None:
    policy = template["Resources"][VAULT_KEY]["Properties"]["KeyPolicy"]["Statement"]
    guards = [
        s
        for s in policy
        if s.get("Effect") == "Deny" and "kms:EncryptionContext:" in json.dumps(s.get("Condition", {}))
    ]
    guarded = {str(a) for s in guards for a in _list(s["Action"])}
    assert {"kms:Decrypt", "kms:CreateGrant", "kms:GenerateDataKey"} <= guarded


def test_grants_can_only_be_decrypt_grants_constrained_to_a_context(template: dict[str, Any]) -> None:
    granting = set()
    for name in _functions(template):
        for statement in statements(template, name):
            if allows(statement, "kms:CreateGrant"):
                granting.add(name)
                condition = statement.get("Condition", {})
                text = json.dumps(condition)
                assert "kms:GrantOperations" in text and "Decrypt" in text, (name, statement)
                assert "kms:GrantConstraintType" in text or "kms:EncryptionContext" in text, (name, statement)
                assert "kms:ReEncrypt" not in text and 'kms:Encrypt"' not in text
    assert granting <= {"ApiFunction", "RotateFunction"}
    assert "ApiFunction" in granting


def test_the_audit_table_is_append_only_for_every_function(template: dict[str, Any]) -> None:
    for name in _functions(template):
        for statement in statements(template, name):
            if not on(statement, "AuditTable"):
                continue
            assert not allows(statement, "dynamodb:DeleteItem"), (name, statement)
            assert not allows(statement, "dynamodb:BatchWriteItem"), (name, statement)
            if allows(statement, "dynamodb:UpdateItem"):
                # Only the chain head (and job checkpoints) may change; records never.
                keys = _condition_values(statement, "dynamodb:LeadingKeys")
                assert keys and all(k == "head" or k.startswith("state#") for k in keys), (name, statement)


def test_audit_function_receives_read_only_kms_events_from_cloudtrail(template: dict[str, Any]) -> None:
    events = template["Resources"]["AuditFunction"]["Properties"]["Events"]
    rules = [e["Properties"] for e in events.values() if e["Type"] == "EventBridgeRule"]
    assert rules, "AuditFunction needs an EventBridgeRule event"
    rule = rules[0]
    pattern = rule["Pattern"]
    assert pattern["source"] == ["aws.kms"]
    assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    assert {"Decrypt", "CreateGrant"} <= set(pattern["detail"]["eventName"])
    # Decrypt is a read-only management event: the rule must opt in to those explicitly.
    assert rule.get("State") == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"


def test_rotate_function_runs_on_a_schedule(template: dict[str, Any]) -> None:
    events = template["Resources"]["RotateFunction"]["Properties"]["Events"]
    assert any(e["Type"] in ("Schedule", "ScheduleV2") for e in events.values())
