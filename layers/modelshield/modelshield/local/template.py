"""Read template.yaml and create its resources on moto: the local stack's single source of truth.

Only what the local stack needs is understood: S3 buckets (versioning, default encryption, Object Lock,
queue notifications), SQS queues (attributes, redrive), DynamoDB tables (keys, indexes, TTL, streams), KMS
keys and aliases, SSM parameters, and the functions' environments and event sources (SQS, DynamoDB
streams, schedules, API). Intrinsics `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`
are resolved to the physical names created here. Bucket and key policies are not applied: moto does not
enforce IAM (TOOLING.md), so least privilege is checked by tests over the template instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags into their long form."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: str
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    sqs_sources: list[tuple[str, int]] = field(default_factory=list)  # (queue logical id, batch size)
    schedules: list[str] = field(default_factory=list)
    stream_sources: list[tuple[str, int]] = field(default_factory=list)  # (table logical id, batch size)
    stream_filters: list[dict[str, Any]] = field(default_factory=list)  # FilterCriteria patterns
    api_events: list[dict[str, Any]] = field(default_factory=list)
    max_concurrency: int | None = None  # an SQS source's ScalingConfig.MaximumConcurrency


@dataclass
class Provisioned:
    """Physical names and ARNs of everything created, keyed by logical id."""

    names: dict[str, str] = field(default_factory=dict)  # Ref value
    arns: dict[str, str] = field(default_factory=dict)  # GetAtt .Arn
    stream_arns: dict[str, str] = field(default_factory=dict)  # GetAtt .StreamArn (tables with a stream)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)


class LocalProvisioner:
    def __init__(self, template: dict[str, Any], *, stack_name: str, clients: dict[str, Any]) -> None:
        self.template = template
        self.stack_name = stack_name
        self.s3 = clients["s3"]
        self.sqs = clients["sqs"]
        self.ddb = clients["dynamodb"]
        self.kms = clients["kms"]
        self.ssm = clients.get("ssm")
        self.events = clients.get("events")  # only needed by templates with an event bus
        self.sfn = clients.get("stepfunctions")  # without it, state machines get an ARN but no definition
        self.out = Provisioned()
        self.resources: dict[str, Any] = template.get("Resources", {})
        self.parameters = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}

    # -- intrinsic functions -------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((name, arg),) = value.items()
            if name == "Ref":
                return self._ref(arg)
            if name == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._getatt(logical, attr)
            if name == "Fn::Sub":
                return self._sub(arg)
            if name == "Fn::Join":
                separator, parts = arg
                resolved = self.resolve(parts)
                return resolved if isinstance(resolved, str) else separator.join(str(p) for p in resolved)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def _ref(self, logical: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
        }
        if logical in pseudo:
            return pseudo[logical]
        if logical in self.parameters:
            return self.parameters[logical]
        self.ensure(logical)
        return self.out.names[logical]

    def _getatt(self, logical: str, attr: str) -> str:
        if logical.endswith("Role") and logical[: -len("Role")] in self.resources:
            return f"arn:aws:iam::{ACCOUNT_ID}:role/{self.stack_name}-{logical}"
        self.ensure(logical)
        if attr == "Arn":
            return self.out.arns[logical]
        if attr == "StreamArn" and logical in self.out.stream_arns:
            return self.out.stream_arns[logical]
        raise ValueError(f"template: Fn::GetAtt {logical}.{attr} is not supported by the local stack")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name:
                logical, attr = name.split(".", 1)
                return self._getatt(logical, attr)
            return self._ref(name)

        return re.sub(r"\$\{([^}!][^}]*)\}", replace, text)

    # -- resources -----------------------------------------------------------------------------------
    def provision(self) -> Provisioned:
        for logical, resource in self.resources.items():
            if resource["Type"] in _CREATORS:
                self.ensure(logical)
        for logical, resource in self.resources.items():
            if resource["Type"] == "AWS::Serverless::Function":
                self.out.functions[logical] = self._function(logical, resource)
        # Notifications last: they need the queues, and S3 sends a test event on save.
        for logical, resource in self.resources.items():
            if resource["Type"] == "AWS::S3::Bucket":
                self._notifications(logical, resource.get("Properties", {}))
        return self.out

    def ensure(self, logical: str) -> None:
        if logical in self.out.names:
            return
        resource = self.resources.get(logical)
        if resource is None:
            raise ValueError(f"template: reference to unknown resource {logical}")
        creator = _CREATORS.get(resource["Type"])
        if creator is None:
            raise ValueError(
                f"template: {logical} ({resource['Type']}) cannot be referenced by the local stack"
            )
        creator(self, logical, resource.get("Properties", {}))

    def _physical(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}".lower()

    def _bucket(self, logical: str, props: dict[str, Any]) -> None:
        name = self._physical(logical)
        self.s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=bool(props.get("ObjectLockEnabled")))
        if "ObjectLockConfiguration" in props:
            lock = self.resolve(props["ObjectLockConfiguration"])
            retention = lock.get("Rule", {}).get("DefaultRetention", {})
            for unit in ("Days", "Years"):
                if unit in retention:
                    retention[unit] = int(retention[unit])  # parameters resolve to strings
            self.s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=lock)
        self.out.names[logical] = name
        self.out.arns[logical] = f"arn:aws:s3:::{name}"
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if "BucketEncryption" in props:
            rules = [
                {
                    ("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
                    for k, v in rule.items()
                }
                for rule in self.resolve(props["BucketEncryption"])["ServerSideEncryptionConfiguration"]
            ]
            self.s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in props:
            self.s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )

    def _notifications(self, logical: str, props: dict[str, Any]) -> None:
        config = props.get("NotificationConfiguration", {})
        queues = [
            {"QueueArn": self.resolve(q["Queue"]), "Events": [q["Event"]]}
            for q in config.get("QueueConfigurations", [])
        ]
        if queues:
            self.s3.put_bucket_notification_configuration(
                Bucket=self.out.names[logical], NotificationConfiguration={"QueueConfigurations": queues}
            )

    def _queue(self, logical: str, props: dict[str, Any]) -> None:
        name = self._physical(logical)
        attributes: dict[str, str] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
            if key in props:
                attributes[key] = str(props[key])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(self.resolve(props["RedrivePolicy"]))
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.out.names[logical] = url
        self.out.arns[logical] = arn

    def _table(self, logical: str, props: dict[str, Any]) -> None:
        name = self._physical(logical)
        self.out.arns[logical] = create_table(self.ddb, props, name)
        self.out.names[logical] = name
        if "StreamSpecification" in props:
            described = self.ddb.describe_table(TableName=name)["Table"]
            self.out.stream_arns[logical] = described["LatestStreamArn"]

    def _key(self, logical: str, props: dict[str, Any]) -> None:
        options = {k: props[k] for k in ("KeySpec", "KeyUsage") if k in props}  # e.g. an HMAC key
        meta = self.kms.create_key(Description=props.get("Description", logical), **options)["KeyMetadata"]
        if props.get("EnableKeyRotation"):
            self.kms.enable_key_rotation(KeyId=meta["KeyId"])
        self.out.names[logical] = meta["KeyId"]
        self.out.arns[logical] = meta["Arn"]

    def _alias(self, logical: str, props: dict[str, Any]) -> None:
        alias = self.resolve(props["AliasName"])
        self.kms.create_alias(AliasName=alias, TargetKeyId=self.resolve(props["TargetKeyId"]))
        self.out.names[logical] = alias
        self.out.arns[logical] = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"

    def _parameter(self, logical: str, props: dict[str, Any]) -> None:
        """An SSM parameter (the stack's own settings, e.g. who the Security Engineer is)."""
        name = str(self.resolve(props["Name"]))
        if self.ssm is not None:
            self.ssm.put_parameter(
                Name=name,
                Value=str(self.resolve(props["Value"])),
                Type=props.get("Type", "String"),
                Overwrite=True,
            )
        self.out.names[logical] = name
        self.out.arns[logical] = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}"

    def _event_bus(self, logical: str, props: dict[str, Any]) -> None:
        if self.events is None:
            raise ValueError(f"template: {logical} needs an `events` client to be provisioned locally")
        name = str(self.resolve(props.get("Name", self._physical(logical))))
        arn = self.events.create_event_bus(Name=name)["EventBusArn"]
        self.out.names[logical] = name
        self.out.arns[logical] = arn

    def _state_machine(self, logical: str, props: dict[str, Any]) -> None:
        name = str(self.resolve(props.get("Name") or self._physical(logical)))
        arn = f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"
        self.out.names[logical] = arn
        self.out.arns[logical] = arn
        if self.sfn is None:
            return
        substitutions = {k: str(self.resolve(v)) for k, v in props.get("DefinitionSubstitutions", {}).items()}
        text = (Path(__file__).resolve().parents[4] / props["DefinitionUri"]).read_text(encoding="utf-8")
        self.sfn.create_state_machine(
            name=name,
            definition=local_definition(text, substitutions),
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{self.stack_name}-{logical}Role",
            type=props.get("Type", "STANDARD"),
        )

    def _function(self, logical: str, resource: dict[str, Any]) -> FunctionSpec:
        glob = self.template.get("Globals", {}).get("Function", {})
        props = resource.get("Properties", {})
        env = dict(glob.get("Environment", {}).get("Variables", {}))
        env.update(props.get("Environment", {}).get("Variables", {}))
        spec = FunctionSpec(
            logical_id=logical,
            code_uri=props["CodeUri"],
            handler=props.get("Handler", "app.lambda_handler"),
            timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
            memory=int(props.get("MemorySize", glob.get("MemorySize", 128))),
            environment={k: str(self.resolve(v)) for k, v in env.items()},
        )
        for event in props.get("Events", {}).values():
            ev_props = event.get("Properties", {})
            if event["Type"] == "SQS":
                queue = ev_props["Queue"]
                logical_queue = queue["Fn::GetAtt"][0] if isinstance(queue, dict) else queue
                spec.sqs_sources.append((logical_queue, int(ev_props.get("BatchSize", 10))))
                scaling = ev_props.get("ScalingConfig", {}).get("MaximumConcurrency")
                spec.max_concurrency = int(scaling) if scaling else None
            elif event["Type"] == "DynamoDB":
                stream = ev_props["Stream"]
                logical_table = stream["Fn::GetAtt"][0] if isinstance(stream, dict) else stream
                spec.stream_sources.append((logical_table, int(ev_props.get("BatchSize", 100))))
                for rule in (ev_props.get("FilterCriteria") or {}).get("Filters", []):
                    spec.stream_filters.append(json.loads(rule["Pattern"]))
            elif event["Type"] == "Schedule":
                spec.schedules.append(str(ev_props.get("Schedule")))
            elif event["Type"] == "Api":
                spec.api_events.append(ev_props)
        return spec


def local_definition(text: str, substitutions: dict[str, str]) -> str:
    """The template's ASL with its DefinitionSubstitutions applied, as CloudFormation does, for moto.

    One difference, listed in the README: moto's ASL parser has no `ItemBatcher`, so locally each
    Distributed Map child gets one item instead of a batch (the worker accepts both shapes).
    """
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    document = json.loads(text)

    def strip(states: dict[str, Any]) -> None:
        for state in states.values():
            if state.get("Type") == "Map":
                state.pop("ItemBatcher", None)
                strip(state.get("ItemProcessor", {}).get("States", {}))

    strip(document["States"])
    return json.dumps(document)


def create_table(ddb: Any, props: dict[str, Any], name: str) -> str:
    """Create a DynamoDB table from its template properties (keys, indexes, TTL); returns its ARN."""
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    arn = str(ddb.create_table(**kwargs)["TableDescription"]["TableArn"])
    if props.get("TimeToLiveSpecification"):
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
    return arn


def create_template_table(ddb: Any, logical_id: str, name: str, template: str | Path | None = None) -> str:
    """Create one table exactly as template.yaml defines it (tests use this: no second copy of a schema)."""
    path = template or Path(__file__).resolve().parents[4] / "template.yaml"
    return create_table(ddb, load_template(path)["Resources"][logical_id]["Properties"], name)


_CREATORS = {
    "AWS::S3::Bucket": LocalProvisioner._bucket,
    "AWS::Serverless::StateMachine": LocalProvisioner._state_machine,
    "AWS::SQS::Queue": LocalProvisioner._queue,
    "AWS::DynamoDB::Table": LocalProvisioner._table,
    "AWS::KMS::Key": LocalProvisioner._key,
    "AWS::KMS::Alias": LocalProvisioner._alias,
    "AWS::SSM::Parameter": LocalProvisioner._parameter,
    "AWS::Events::EventBus": LocalProvisioner._event_bus,
}
