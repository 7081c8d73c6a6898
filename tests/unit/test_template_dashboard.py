"""template.yaml, read as data: the dashboard is reachable only through Cognito sign-in, and reads only.

moto enforces none of this (TOOLING.md), so the template is what is under test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.unit.test_template_privilege import TEMPLATE, CfnLoader, _list, statements

READ_ACTIONS = {
    "dynamodb:getitem",
    "dynamodb:batchgetitem",
    "dynamodb:query",
    "dynamodb:scan",
    "kms:describekey",
    "kms:getkeyrotationstatus",
    "kms:listkeyrotations",
}
# Invoke paths a Lambda function can have besides an explicit permission.
PUBLIC_EVENT_TYPES = {"Api", "HttpApi", "FunctionUrl"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def _refers_to(value: Any, logical: str) -> bool:
    text = json.dumps(value)
    return f'"{logical}"' in text or f'"{logical}.' in text


def test_the_dashboard_function_has_no_url_api_or_public_event(template: dict[str, Any]) -> None:
    props = template["Resources"]["DashboardFunction"]["Properties"]
    assert "FunctionUrlConfig" not in props
    assert not props.get("Events"), "the dashboard must be invoked only by its load balancer"
    assert not any(r.get("Type") == "AWS::Lambda::Url" for r in template["Resources"].values()), (
        "no function URL anywhere"
    )


def test_only_the_dashboard_target_group_may_invoke_the_function(template: dict[str, Any]) -> None:
    permissions = [
        r["Properties"]
        for r in template["Resources"].values()
        if r.get("Type") == "AWS::Lambda::Permission"
        and _refers_to(r["Properties"]["FunctionName"], "DashboardFunction")
    ]
    assert len(permissions) == 1
    (permission,) = permissions
    assert permission["Principal"] == "elasticloadbalancing.amazonaws.com"
    assert "targetgroup/${AWS::StackName}-dash/" in json.dumps(permission["SourceArn"])
    assert permission.get("SourceAccount") == {"Ref": "AWS::AccountId"}
    group = template["Resources"]["DashboardTargetGroup"]["Properties"]
    assert group["TargetType"] == "lambda"
    assert json.dumps(group["Name"]) == json.dumps({"Fn::Sub": "${AWS::StackName}-dash"})


def test_every_listener_authenticates_with_cognito_before_forwarding(template: dict[str, Any]) -> None:
    listeners = [r["Properties"] for r in template["Resources"].values()
                 if r.get("Type") == "AWS::ElasticLoadBalancingV2::Listener"]  # fmt: skip
    assert listeners, "the dashboard needs its HTTPS listener"
    for listener in listeners:
        assert listener["Protocol"] == "HTTPS"
        actions = sorted(listener["DefaultActions"], key=lambda a: a["Order"])
        assert actions[0]["Type"] == "authenticate-cognito"
        assert actions[0]["AuthenticateCognitoConfig"]["OnUnauthenticatedRequest"] == "authenticate"
        assert [a["Type"] for a in actions[1:]] == ["forward"]
    rules = [
        r
        for r in template["Resources"].values()
        if r.get("Type") == "AWS::ElasticLoadBalancingV2::ListenerRule"
    ]
    assert not rules, "a listener rule could forward without the sign-in action"


def test_sign_in_is_invitation_only_with_mfa(template: dict[str, Any]) -> None:
    pool = template["Resources"]["DashboardUserPool"]["Properties"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["MfaConfiguration"] == "ON"
    client = template["Resources"]["DashboardUserPoolClient"]["Properties"]
    assert client["GenerateSecret"] is True and client["AllowedOAuthFlows"] == ["code"]


def test_the_dashboard_role_only_reads(template: dict[str, Any]) -> None:
    found = statements(template, "DashboardFunction")
    assert found
    for statement in found:
        assert statement["Effect"] == "Allow"
        actions = {str(a).lower() for a in _list(statement["Action"])}
        assert actions <= READ_ACTIONS, statement
        assert "*" not in _list(statement["Resource"]), statement
        if "dynamodb:scan" in actions:  # whole-table reads only on the small groups table
            assert _list(statement["Resource"]) == [{"Fn::GetAtt": ["GroupsTable", "Arn"]}], statement


def test_the_metrics_function_writes_only_the_metrics_table(template: dict[str, Any]) -> None:
    for statement in statements(template, "MetricsFunction"):
        actions = {str(a).lower() for a in _list(statement["Action"])}
        writes = {a for a in actions if a.split(":")[1].startswith(("put", "update", "delete", "batchwrite"))}
        if writes:
            assert _list(statement["Resource"]) == [{"Fn::GetAtt": ["MetricsTable", "Arn"]}], statement


def test_the_counters_follow_the_streams_of_the_tables_they_summarise(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    events = resources["MetricsFunction"]["Properties"]["Events"]
    streams = {json.dumps(e["Properties"]["Stream"]) for e in events.values() if e["Type"] == "DynamoDB"}
    for table in ("ArtifactsTable", "ScansTable", "AuditTable"):
        assert json.dumps({"Fn::GetAtt": [table, "StreamArn"]}) in streams
        assert "StreamSpecification" in resources[table]["Properties"]
    for event in events.values():
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (
        resources["ArtifactsTable"]["Properties"]["StreamSpecification"]["StreamViewType"]
        == "NEW_AND_OLD_IMAGES"
    )
    assert (
        resources["AuditTable"]["Properties"]["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    )
    indexes = {i["IndexName"] for i in resources["AuditTable"]["Properties"]["GlobalSecondaryIndexes"]}
    assert "AttemptIndex" in indexes


def test_the_dashboard_may_only_read_the_vault_keys_rotation_status(template: dict[str, Any]) -> None:
    policy = template["Resources"]["VaultKey"]["Properties"]["KeyPolicy"]["Statement"]
    naming = [s for s in policy if "DashboardFunctionRole" in json.dumps(s.get("Principal"))]
    assert naming, "the page shows the vault key's rotation status"
    for statement in naming:
        assert statement["Effect"] == "Allow"
        assert set(_list(statement["Action"])) <= {"kms:DescribeKey", "kms:GetKeyRotationStatus",
                                                   "kms:ListKeyRotations"}  # fmt: skip
