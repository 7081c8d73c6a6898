"""Bulk jobs in template.yaml and statemachine/jobs.asl.json, read as data: the engine is a DISTRIBUTED
Map fed through task tokens, and the roles touch only what a job needs (repositories given as a parameter)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelshield.local.template import local_definition

from tests.unit.test_template_privilege import CfnLoader, allows, on, statements

ROOT = Path(__file__).resolve().parents[2]
S3_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


@pytest.fixture(scope="module")
def machine(template: dict[str, Any]) -> dict[str, Any]:
    props = template["Resources"]["JobsStateMachine"]["Properties"]
    return json.loads((ROOT / props["DefinitionUri"]).read_text())


def _states(states: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, state in states.items():
        out.append((name, state))
        out.extend(_states(state.get("ItemProcessor", {}).get("States", {})))
    return out


def test_the_state_machine_is_discover_then_a_distributed_map_then_settle(
    template: dict[str, Any], machine: dict[str, Any]
) -> None:
    assert template["Resources"]["JobsStateMachine"]["Type"] == "AWS::Serverless::StateMachine"
    (maps,) = [s for _, s in _states(machine["States"]) if s["Type"] == "Map"]
    assert maps["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert maps["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert maps["ItemReader"]["ReaderConfig"]["InputType"] == "JSON"
    assert maps["ItemBatcher"]["MaxItemsPerBatch"] >= 1
    assert maps["MaxConcurrencyPath"] == "$.max_concurrency"
    assert maps["ToleratedFailurePercentagePath"] == "$.tolerated_failure_percent"
    assert "ResultWriter" in maps  # AWS keeps the engine's own report too
    assert machine["States"]["Discover"]["Next"] == "Items" and maps["Next"] == "Settle"
    # Every failure path still reaches Settle, so the job record always gets a final status
    for name in ("Discover", "Items"):
        assert machine["States"][name]["Catch"][0]["Next"] == "Settle"


def test_every_task_is_a_task_token_on_the_jobs_queue_with_backoff_on_throttling(
    machine: dict[str, Any],
) -> None:
    tasks = [(n, s) for n, s in _states(machine["States"]) if s["Type"] == "Task"]
    assert {n for n, _ in tasks} == {"Discover", "Work", "Settle"}
    for name, task in tasks:
        assert task["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken", name
        assert task["Parameters"]["QueueUrl"] == "${JobsQueueUrl}", name
        assert task["Parameters"]["MessageBody"]["token.$"] == "$$.Task.Token", name
        assert 0 < task["TimeoutSeconds"] <= 3600, name
        throttled = [r for r in task["Retry"] if "ModelShield.Throttled" in r["ErrorEquals"]]
        assert throttled and throttled[0]["BackoffRate"] > 1 and throttled[0]["MaxAttempts"] >= 3, name


def test_the_definition_substitutions_cover_every_placeholder(template: dict[str, Any]) -> None:
    props = template["Resources"]["JobsStateMachine"]["Properties"]
    text = (ROOT / props["DefinitionUri"]).read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(props["DefinitionSubstitutions"])


def test_the_local_definition_differs_only_by_the_item_batcher(machine: dict[str, Any]) -> None:
    local = json.loads(local_definition(json.dumps(machine), {"JobsQueueUrl": "q", "ReportsBucket": "r"}))
    assert "ItemBatcher" not in local["States"]["Items"]
    local["States"]["Items"]["ItemBatcher"] = machine["States"]["Items"]["ItemBatcher"]
    restored = json.dumps(local).replace('"q"', '"${JobsQueueUrl}"').replace('"r"', '"${ReportsBucket}"')
    assert json.loads(restored) == machine


def test_the_job_worker_writes_only_repositories_quarantine_and_reports(template: dict[str, Any]) -> None:
    for statement in statements(template, "JobWorkerFunction"):
        if not any(allows(statement, a) for a in S3_WRITES):
            continue
        resources = json.dumps(statement["Resource"])
        assert "IngestBucket" not in resources, statement
        assert (
            "RepositoryBuckets" in resources
            or "quarantine/repositories/*" in resources
            or "modelshield-jobs/*" in resources
        ), statement
        if on(statement, "VaultBucket"):
            assert "quarantine/repositories/*" in resources, statement
    assert template["Parameters"]["RepositoryBuckets"]["Type"] == "CommaDelimitedList"


def test_the_job_worker_can_answer_only_its_own_state_machines_tokens(template: dict[str, Any]) -> None:
    answering = [s for s in statements(template, "JobWorkerFunction") if allows(s, "states:SendTaskSuccess")]
    assert answering and all(s["Resource"] == {"Ref": "JobsStateMachine"} for s in answering)
    assert not any(allows(s, "states:StartExecution") for s in statements(template, "JobWorkerFunction"))


def test_only_the_api_starts_jobs_and_the_engine_only_feeds_the_queue(template: dict[str, Any]) -> None:
    starting = [s for s in statements(template, "ApiFunction") if allows(s, "states:StartExecution")]
    assert starting and all(s["Resource"] == {"Ref": "JobsStateMachine"} for s in starting)
    policy = template["Resources"]["JobsStateMachine"]["Properties"]["Policies"][0]["Statement"]
    sends = [s for s in policy if "sqs:SendMessage" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in sends] == [{"Fn::GetAtt": ["JobsQueue", "Arn"]}]
    assert not any(
        "kms:" in json.dumps(s["Action"]) and "VaultKey" in json.dumps(s["Resource"]) for s in policy
    )


def test_the_jobs_queue_outlives_the_worker_and_has_a_dead_letter_queue(template: dict[str, Any]) -> None:
    queue = template["Resources"]["JobsQueue"]["Properties"]
    worker = template["Resources"]["JobWorkerFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    (event,) = worker["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
