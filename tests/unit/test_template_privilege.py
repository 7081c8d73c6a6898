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


# -- the vault key: its own policy is the only place use is granted ------------------------------------

# Re-wrap and re-key; rescans into their ephemeral storage; the JobWorker verifies every frame of what it
# encrypts in place before any plaintext goes, runs `verify` jobs and re-keys through the rotation code.
# Consumers decrypt only through grants.
DECRYPTERS = {"RotateFunctionRole", "RescanFunctionRole", "JobWorkerFunctionRole"}
USE_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
)


def _expand(statements: list[Any], *, optional: bool = True) -> list[dict[str, Any]]:
    """Policy statements with `Fn::If` resolved: the "true" branch when `optional` (worst case: every
    opt-in enabled), else the "false" branch. `AWS::NoValue` branches disappear."""
    out = []
    for statement in statements:
        if isinstance(statement, dict) and "Fn::If" in statement:
            _, when_true, when_false = statement["Fn::If"]
            chosen = when_true if optional else when_false
            if isinstance(chosen, dict) and chosen.get("Ref") == "AWS::NoValue":
                continue
            out.append(chosen)
        else:
            out.append(statement)
    return out


def key_policy(template: dict[str, Any], *, optional: bool = True) -> list[dict[str, Any]]:
    return _expand(
        template["Resources"][VAULT_KEY]["Properties"]["KeyPolicy"]["Statement"], optional=optional
    )


def bucket_policy(template: dict[str, Any], name: str, *, optional: bool = False) -> list[dict[str, Any]]:
    return _expand(
        template["Resources"][name]["Properties"]["PolicyDocument"]["Statement"], optional=optional
    )


def principals(statement: dict[str, Any]) -> list[Any]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    return _list((principal or {}).get("AWS", []))


def key_holders(template: dict[str, Any], action: str, *, optional: bool = True) -> set[str]:
    """Who the vault key policy allows `action`, as logical role names (or the raw principal)."""
    out = set()
    for statement in key_policy(template, optional=optional):
        if not allows(statement, action):
            continue
        for principal in principals(statement):
            target = principal.get("Fn::GetAtt") if isinstance(principal, dict) else None
            out.add(target[0] if target else json.dumps(principal))
    return out


def test_no_function_role_mentions_the_vault_key_iam_cannot_widen_it(template: dict[str, Any]) -> None:
    for name in _functions(template):
        for statement in statements(template, name):
            assert not _mentions(statement.get("Resource"), VAULT_KEY), (name, statement)


def test_the_key_policy_delegates_nothing_to_the_account_or_everyone(template: dict[str, Any]) -> None:
    # Given the key policy with every optional path enabled
    for statement in key_policy(template):
        if statement["Effect"] != "Allow":
            continue
        # Then no Allow names the account root (IAM delegation) or "*"
        for principal in principals(statement):
            assert principal != "*" and ":root" not in json.dumps(principal), statement
        assert "kms:*" not in _list(statement["Action"]), statement


def test_key_administration_is_separate_from_use(template: dict[str, Any]) -> None:
    admin = [s for s in key_policy(template) if _mentions(principals(s), "KeyAdministratorArn")]
    assert admin and all(s["Effect"] == "Allow" for s in admin)
    for statement in admin:
        actions = [str(a) for a in _list(statement["Action"])]
        assert all("*" not in a for a in actions), actions  # kms:Create* would include CreateGrant
        for use in USE_ACTIONS:
            assert not allows(statement, use), (use, statement)
        assert allows(statement, "kms:PutKeyPolicy")  # administration: audited (AuditFunction pattern)


def test_the_scan_role_cannot_decrypt_with_the_vault_key(template: dict[str, Any]) -> None:
    for action in DECRYPTING:
        assert "ScanFunctionRole" not in key_holders(template, action)
    assert "ScanFunctionRole" in key_holders(template, "kms:GenerateDataKey")


def test_only_rotation_and_rescan_decrypt_and_break_glass_only_if_configured(
    template: dict[str, Any],
) -> None:
    # Given the default parameters (no break-glass role)
    assert template["Parameters"]["BreakGlassRoleName"]["Default"] == ""
    # Then only the rotation run (re-wrap) and the rescan function (into its ephemeral storage) decrypt
    assert key_holders(template, "kms:Decrypt", optional=False) == DECRYPTERS
    for action in ("kms:ReEncryptFrom", "kms:ReEncryptTo"):
        assert key_holders(template, action) == set()
    # And the break-glass path, once configured, is one named role, every call of which the audit sees
    extra = key_holders(template, "kms:Decrypt") - DECRYPTERS
    assert len(extra) == 1 and "BreakGlassRoleName" in next(iter(extra))
    pattern = template["Resources"]["AuditFunction"]["Properties"]["Events"]["KmsCalls"]["Properties"][
        "Pattern"
    ]
    assert "Decrypt" in pattern["detail"]["eventName"] and _mentions(
        pattern["detail"]["resources"], VAULT_KEY
    )


def test_every_use_of_the_vault_key_is_constrained_by_encryption_context(template: dict[str, Any]) -> None:
    for statement in key_policy(template):
        if statement["Effect"] == "Allow" and any(allows(statement, a) for a in USE_ACTIONS):
            purposes = _condition_values(statement, "kms:EncryptionContext:modelshield:purpose")
            assert purposes and set(purposes) <= {"model-artifact", "quarantine"}, statement


def test_the_key_policy_refuses_data_key_use_without_an_artifact_context(template: dict[str, Any]) -> None:
    guards = [
        s
        for s in key_policy(template)
        if s.get("Effect") == "Deny" and "kms:EncryptionContext:" in json.dumps(s.get("Condition", {}))
    ]
    guarded = {str(a) for s in guards for a in _list(s["Action"])}
    assert {"kms:Decrypt", "kms:CreateGrant", "kms:GenerateDataKey"} <= guarded


def test_grants_are_decrypt_only_for_one_artifact_one_consumer_retired_by_rotation(
    template: dict[str, Any],
) -> None:
    # Given every statement that allows CreateGrant on the vault key
    granting = [s for s in key_policy(template) if allows(s, "kms:CreateGrant")]
    assert granting
    holders = key_holders(template, "kms:CreateGrant")
    assert holders == {"ApiFunctionRole", "RotateFunctionRole"}  # approval path and grant migration only
    for statement in granting:
        # Then the grant can only allow Decrypt ...
        assert _condition_values(statement, "kms:GrantOperations") == ["Decrypt"], statement
        # ... constrained to an exact encryption context of a consumer copy (never a quarantine one) ...
        assert _condition_values(statement, "kms:GrantConstraintType") == ["EncryptionContextEquals"]
        assert _condition_values(statement, "kms:EncryptionContext:modelshield:purpose") == ["model-artifact"]
        nulls = (statement["Condition"]).get("Null", {})
        for key in ("artifact", "version", "sha256"):
            assert nulls.get(f"kms:EncryptionContext:modelshield:{key}") == "false", (key, statement)
        # ... retirable by the rotation run, for a principal of this account the stack allows
        assert _mentions(_condition_values(statement, "kms:RetiringPrincipal"), "RotateFunctionRole")
        grantee = _condition_values(statement, "kms:GranteePrincipal")
        assert (
            grantee
            and _mentions(grantee, "AWS::AccountId")
            and _mentions(grantee, "ConsumerPrincipalPattern")
        )
    # And no function role can give CreateGrant to itself through IAM
    for name in _functions(template):
        for statement in statements(template, name):
            assert not allows(statement, "kms:CreateGrant"), (name, statement)


def test_no_grant_can_name_modelshield_itself_or_the_key_administrator(template: dict[str, Any]) -> None:
    denies = [
        s
        for s in key_policy(template)
        if s["Effect"] == "Deny" and allows({**s, "Effect": "Allow"}, "kms:CreateGrant")
    ]
    named = [v for s in denies for v in (_condition_values(s, "kms:GranteePrincipal") or [])]
    for role in ("ScanFunctionRole", *DECRYPTERS, "ApiFunctionRole"):
        assert any(role in v for v in named), role
    assert any("KeyAdministratorArn" in v for v in named)


def test_consumer_pattern_is_a_parameter_of_this_account(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["ConsumerPrincipalPattern"]
    assert not str(parameter["Default"]).startswith("arn:")  # the account part is fixed by the template


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


# -- the ingest bucket: a drop zone only ModelShield reads -------------------------------------------


def _exempt(statement: dict[str, Any]) -> list[Any]:
    """The principals a Deny statement spares (its ArnNotEquals aws:PrincipalArn list)."""
    return _list(((statement.get("Condition") or {}).get("ArnNotEquals") or {}).get("aws:PrincipalArn", []))


def _deny(policy: list[dict[str, Any]], action: str, resource: str) -> list[dict[str, Any]]:
    return [
        s
        for s in policy
        if s["Effect"] == "Deny"
        and s.get("Principal") == "*"
        and allows({**s, "Effect": "Allow"}, action)
        and resource in json.dumps(s.get("Resource"))
        and "aws:SecureTransport" not in json.dumps(s.get("Condition"))  # TLS-only is not an access rule
    ]


def _role_names(values: list[Any]) -> set[str]:
    out = set()
    for value in values:
        target = value.get("Fn::GetAtt") if isinstance(value, dict) else None
        out.add(target[0] if target else json.dumps(value))
    return out


def _iam_holders(template: dict[str, Any], action: str, resource: str) -> set[str]:
    return {
        f"{name}Role"
        for name in _functions(template)
        for statement in statements(template, name)
        if allows(statement, action) and on(statement, resource)
    }


def test_by_default_nobody_but_the_scan_function_reads_an_upload_whatever_its_tags(
    template: dict[str, Any],
) -> None:
    # Given the ingest bucket policy with the default parameters (no direct readers)
    assert template["Parameters"]["DirectReadPrincipalArns"]["Default"] == ""
    policy = bucket_policy(template, "IngestBucketPolicy")
    for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectTagging"):
        # Then every read is denied to everyone but the scan function's role, with no tag condition
        denies = _deny(policy, action, "IngestBucket")
        assert denies, action
        deny = denies[0]
        spared = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]["Fn::If"][2]
        assert _role_names(spared) == {"ScanFunctionRole", "RescanFunctionRole"}, spared
        assert "ExistingObjectTag" not in json.dumps(deny["Condition"])
    # And no other function is given ingest reads by IAM that the bucket policy would then refuse
    assert _iam_holders(template, "s3:GetObject", "IngestBucket") == {
        "ScanFunctionRole",
        "RescanFunctionRole",
    }


def test_the_rescan_function_reads_only_metadata_sidecars_of_uploads(template: dict[str, Any]) -> None:
    # Given the rescan role (it judges vault copies; the plaintext upload may be gone)
    for statement in statements(template, "RescanFunction"):
        if _mentions(statement.get("Resource"), "IngestBucket.Arn}/"):
            # Then its IAM reads of uploads are signatures and model cards, nothing else
            resources = json.dumps(statement["Resource"])
            assert _list(statement["Action"]) == ["s3:GetObject"], statement
            assert resources.count("Fn::Sub") == 2 and "*.sig" in resources and "*README.md" in resources
    # And the bucket policy says the same, whatever IAM would allow
    sidecar_only = [
        s
        for s in bucket_policy(template, "IngestBucketPolicy")
        if s.get("Sid") == "RescansReadOnlyMetadataSidecars"
    ]
    assert sidecar_only and _mentions(sidecar_only[0]["Condition"]["ArnEquals"], "RescanFunctionRole")
    assert "NotResource" in sidecar_only[0] and "Resource" not in sidecar_only[0]


def test_direct_reads_are_an_explicit_opt_in_limited_to_released_versions(template: dict[str, Any]) -> None:
    # Given the policy with the opt-in enabled
    policy = bucket_policy(template, "IngestBucketPolicy", optional=True)
    opted = [s for s in policy if s.get("Sid") == "OptedInReadersSeeOnlyReleasedVersions"]
    assert len(opted) == 1
    # Then opted-in readers are still refused any version whose verdict tag is not a released one
    tag = opted[0]["Condition"]["StringNotEquals"]["s3:ExistingObjectTag/modelshield-verdict"]
    assert set(tag) == {"ALLOWED", "ALLOWED_WITH_WARNINGS"}
    assert _mentions(opted[0]["Condition"]["ArnEquals"], "DirectReadPrincipalArns")
    # And without it that statement does not exist at all
    assert not [s for s in bucket_policy(template, "IngestBucketPolicy") if s.get("Sid") == opted[0]["Sid"]]


def test_modelshield_tags_cannot_be_written_by_anyone_else_nor_arrive_with_an_upload(
    template: dict[str, Any],
) -> None:
    policy = bucket_policy(template, "IngestBucketPolicy")
    for action in (
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:DeleteObjectTagging",
        "s3:DeleteObjectVersionTagging",
    ):
        denies = _deny(policy, action, "IngestBucket")
        assert denies and _role_names(_exempt(denies[0])) == {"ScanFunctionRole"}, action
    uploads = [
        s for s in _deny(policy, "s3:PutObject", "IngestBucket") if "s3:RequestObjectTagKeys" in json.dumps(s)
    ]
    assert uploads, "uploads carrying modelshield-* tags must be refused"
    condition = uploads[0]["Condition"]
    assert condition["ForAnyValue:StringLike"]["s3:RequestObjectTagKeys"] == "modelshield-*"
    assert "aws:PrincipalArn" not in json.dumps(condition)  # refused for everyone, ModelShield included


def test_only_modelshield_removes_plaintext_versions(template: dict[str, Any]) -> None:
    deny = _deny(bucket_policy(template, "IngestBucketPolicy"), "s3:DeleteObjectVersion", "IngestBucket")
    assert deny
    spared = _role_names(_exempt(deny[0]))
    assert (
        _iam_holders(template, "s3:DeleteObjectVersion", "IngestBucket")
        == spared
        == {
            "ScanFunctionRole",
            "PlaintextSweepFunctionRole",
        }
    )


# -- the vault bucket ------------------------------------------------------------------------------


def test_vault_lifecycle_spares_quarantine_and_pinned_versions(template: dict[str, Any]) -> None:
    rules = template["Resources"]["VaultBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    for rule in rules:
        if not ({"NoncurrentVersionExpiration", "ExpirationInDays", "ExpirationDate"} & rule.keys()):
            continue
        # An expiring rule must be limited to versions explicitly marked for removal: never by age alone,
        # never by a prefix (which would reach quarantine/ or versions a row pins).
        assert rule.get("TagFilters") or (rule.get("Filter") or {}).get("Tag"), rule
        assert "Prefix" not in rule, rule


def test_quarantine_versions_cannot_be_deleted_or_read_by_the_serving_path(template: dict[str, Any]) -> None:
    policy = bucket_policy(template, "VaultBucketPolicy")
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        denies = _deny(policy, action, "quarantine/")
        assert denies, action
        spared = _role_names(_exempt(denies[0]))
        assert not any(name.endswith("FunctionRole") for name in spared), (
            spared
        )  # no function, Scan/Rotate included
    reads = _deny(policy, "s3:GetObject", "quarantine/")
    assert reads and "ApiFunctionRole" not in _role_names(_exempt(reads[0]))


def test_only_modelshield_functions_write_the_vault(template: dict[str, Any]) -> None:
    deny = [
        s for s in _deny(bucket_policy(template, "VaultBucketPolicy"), "s3:PutObject", "VaultBucket.Arn}/*")
    ]
    assert deny
    spared = {n for n in _role_names(_exempt(deny[0])) if n.endswith("Role")}
    assert _iam_holders(template, "s3:PutObject", "VaultBucket") <= spared


# -- queues, logging, tables, settings --------------------------------------------------------------


def test_the_scan_queue_accepts_s3_notifications_only_from_the_ingest_bucket(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    statement = next(
        s
        for s in resources["ScanQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "s3.amazonaws.com"}
    )
    source_arn = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    bucket_name = resources["IngestBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    # The policy pins the bucket by the same name the bucket is created with.
    assert source_arn[0].endswith(":s3:::" + bucket_name[0]) and source_arn[1] == bucket_name[1]
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_every_object_read_of_ingest_and_vault_is_logged(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for bucket in ("IngestBucket", "VaultBucket", "AuditAnchorBucket"):
        logging = resources[bucket]["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == {"Ref": "LogsBucket"}
    trails = [r for r in resources.values() if r["Type"] == "AWS::CloudTrail::Trail"]
    assert len(trails) == 1
    selectors = trails[0]["Properties"]["EventSelectors"]
    data = [d for sel in selectors if sel["ReadWriteType"] == "All" for d in sel["DataResources"]]
    values = json.dumps([d["Values"] for d in data if d["Type"] == "AWS::S3::Object"])
    assert "IngestBucket.Arn" in values and "VaultBucket.Arn" in values


def test_every_table_has_point_in_time_recovery_and_a_customer_managed_key(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        assert props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"), name
        sse = props.get("SSESpecification", {})
        assert sse.get("SSEType") == "KMS" and sse.get("KMSMasterKeyId") == {"Ref": "StorageKey"}, name


def test_the_security_engineer_is_one_role_kept_in_the_stack_not_a_wildcard(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["SecurityEngineerRoleName"]
    assert "*" not in parameter["Default"] and "?" not in parameter["Default"]
    assert "*" not in parameter["AllowedPattern"].replace("{1,128}", "")
    stored = template["Resources"]["SecurityEngineerParameter"]["Properties"]
    assert (
        stored["Value"]["Fn::Sub"]
        == "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${SecurityEngineerRoleName}"
    )
    for name, function in _functions(template).items():
        env = (function["Properties"].get("Environment") or {}).get("Variables", {})
        assert "SECURITY_ENGINEER_ROLE" not in env, name


def test_the_scan_roles_write_only_rows_of_ingest_artifacts(template: dict[str, Any]) -> None:
    for name in ("ScanFunction", "RescanFunction"):
        for statement in statements(template, name):
            if not (on(statement, "ArtifactsTable") or on(statement, "ScansTable")):
                continue
            if any(allows(statement, a) for a in ("dynamodb:PutItem", "dynamodb:UpdateItem")):
                keys = json.dumps(_condition_values(statement, "dynamodb:LeadingKeys"))
                assert "${IngestBucket}/*" in keys, (name, statement)


# -- the audit anchor ---------------------------------------------------------------------------------


def test_the_audit_chain_is_anchored_where_its_writers_cannot_write(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    bucket = resources["AuditAnchorBucket"]["Properties"]
    # Given an Object Lock bucket in compliance mode (no principal can delete or overwrite a locked anchor)
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    # Then only the anchor function may put objects there ...
    denies = _deny(bucket_policy(template, "AuditAnchorBucketPolicy"), "s3:PutObject", "AuditAnchorBucket")
    assert denies and _role_names(_exempt(denies[0])) == {"AuditAnchorFunctionRole"}
    # ... which itself cannot change the chain
    for statement in statements(template, "AuditAnchorFunction"):
        if on(statement, "AuditTable"):
            assert not any(
                allows(statement, a)
                for a in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
            )
    # And no function that appends to the chain can write anchors
    writers = {
        n
        for n in _functions(template)
        for s in statements(template, n)
        if on(s, "AuditTable") and allows(s, "dynamodb:PutItem")
    }
    assert writers and "AuditAnchorFunction" not in writers
    for name in writers:
        for statement in statements(template, name):
            assert not (on(statement, "AuditAnchorBucket") and allows(statement, "s3:PutObject")), name


def test_anchors_are_written_on_every_append_batch_and_on_a_schedule(template: dict[str, Any]) -> None:
    events = template["Resources"]["AuditAnchorFunction"]["Properties"]["Events"]
    kinds = {e["Type"] for e in events.values()}
    assert {"DynamoDB", "Schedule"} <= kinds
    stream = next(e for e in events.values() if e["Type"] == "DynamoDB")["Properties"]["Stream"]
    assert stream == {"Fn::GetAtt": ["AuditTable", "StreamArn"]}
    assert template["Resources"]["AuditTable"]["Properties"]["StreamSpecification"]


def test_every_kms_event_the_audit_rule_sends_is_recorded(template: dict[str, Any]) -> None:
    # Key administration that could change who decrypts is audited like decryption itself
    from modelshield.audit import KMS_EVENTS

    pattern = template["Resources"]["AuditFunction"]["Properties"]["Events"]["KmsCalls"]["Properties"][
        "Pattern"
    ]
    sent = set(pattern["detail"]["eventName"])
    assert {"PutKeyPolicy", "ScheduleKeyDeletion", "DisableKey"} <= sent
    assert sent <= KMS_EVENTS


# -- sealed scan records --------------------------------------------------------------------------------


def test_only_the_functions_that_record_verdicts_can_seal_a_scan_record(template: dict[str, Any]) -> None:
    key = template["Resources"]["ScanRecordKey"]["Properties"]
    # Given an HMAC key
    assert key["KeySpec"] == "HMAC_256" and key["KeyUsage"] == "GENERATE_VERIFY_MAC"
    policy = _list(key["KeyPolicy"]["Statement"])
    # Then only the scan, rescan and job functions may make a MAC, and nobody may grant its use
    sealers = {
        name
        for s in policy
        if allows(s, "kms:GenerateMac") or allows(s, "kms:CreateGrant")
        for name in _role_names(principals(s))
    }
    assert sealers == {"ScanFunctionRole", "RescanFunctionRole", "JobWorkerFunctionRole"}
    # And the administrator administers without use
    admin = next(s for s in policy if s.get("Sid") == "AdministrationWithoutUse")
    assert not any(allows(admin, a) for a in ("kms:GenerateMac", "kms:VerifyMac", "kms:CreateGrant"))
    # And no function role gets GenerateMac from IAM either
    for name in _functions(template):
        for statement in statements(template, name):
            if statement.get("_template") or statement.get("_managed") or statement.get("_unknown_role"):
                continue
            assert not allows(statement, "kms:GenerateMac"), (name, statement)


def test_every_function_that_reads_or_writes_scans_knows_the_seal_key(template: dict[str, Any]) -> None:
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert globals_env["SCAN_RECORD_KEY_ID"] == {"Ref": "ScanRecordKeyAlias"}
    for name, function in _functions(template).items():
        env = (function["Properties"].get("Environment") or {}).get("Variables", {})
        assert env.get("SCAN_RECORD_KEY_ID", globals_env["SCAN_RECORD_KEY_ID"]) == {
            "Ref": "ScanRecordKeyAlias"
        }, name


@pytest.mark.parametrize("function", ["RotateFunction", "JobWorkerFunction"])
def test_rotation_writers_touch_only_lease_items_of_the_idempotency_table(
    template: dict[str, Any], function: str
) -> None:
    # Given the roles that rotate vault copies (nightly runs, re-key jobs)
    on_table = [s for s in statements(template, function) if on(s, "IdempotencyTable")]

    # Then they may take and give back the artifact's lease (what the scan pipeline holds while it writes
    # consumers' key), and nothing else of that table: no idempotency markers, no reads, no updates
    assert on_table, f"{function} cannot take the artifact lease, so it could roll consumers' key back"
    for statement in on_table:
        assert sorted(_list(statement["Action"])) == ["dynamodb:DeleteItem", "dynamodb:PutItem"], statement
        assert _condition_values(statement, "dynamodb:LeadingKeys") == ["lease#*"], statement
