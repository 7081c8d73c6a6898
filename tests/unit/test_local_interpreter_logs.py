"""The local stack silences moto's ASL interpreter's two expected lines per job, and no real error."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import boto3
import pytest
from modelshield.local import interpreter_logs
from modelshield.local.interpreter_logs import quiet_interpreter
from moto import mock_aws

from tests.builders import moto_credentials

# The jobs definition's two constructs the interpreter logs about (an IsPresent probe of `$.manifest` and a
# ToleratedFailurePercentagePath), then a genuine mistake: a Parameters path that is not in the input.
DEFINITION = {
    "StartAt": "HasManifest",
    "States": {
        "HasManifest": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.manifest", "IsPresent": True, "Next": "Items"}],
            "Default": "Items",
        },
        "Items": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ToleratedFailurePercentagePath": "$.tolerated",
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Echo",
                "States": {"Echo": {"Type": "Pass", "End": True}},
            },
            "ResultPath": None,
            "Next": "Broken",
        },
        "Broken": {"Type": "Pass", "Parameters": {"a.$": "$.not_in_the_input"}, "End": True},
    },
}


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    moto_credentials(monkeypatch)
    # Another test's library may have configured logging (dictConfig disables existing loggers, a level may
    # be raised): start from moto's loggers as they come, so the result depends on this test alone.
    for name in (interpreter_logs.PARSER_LOGGER, interpreter_logs.EVAL_LOGGER):
        target = logging.getLogger(name)
        for installed in list(target.filters):
            target.removeFilter(installed)
        monkeypatch.setattr(target, "disabled", False)
        monkeypatch.setattr(target, "propagate", True)
        monkeypatch.setattr(target, "level", logging.NOTSET)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions")

        def run() -> str:
            arn = sfn.create_state_machine(
                name=f"m{time.monotonic_ns()}",
                definition=json.dumps(DEFINITION),
                roleArn="arn:aws:iam::123456789012:role/jobs",
            )["stateMachineArn"]
            execution = sfn.start_execution(
                stateMachineArn=arn, input=json.dumps({"items": [1, 2], "tolerated": 0.0})
            )["executionArn"]
            for _ in range(100):
                status = str(sfn.describe_execution(executionArn=execution)["status"])
                if status != "RUNNING":
                    return status
                time.sleep(0.05)
            return status

        yield run
    for name in (interpreter_logs.PARSER_LOGGER, interpreter_logs.EVAL_LOGGER):
        target = logging.getLogger(name)
        for installed in list(target.filters):
            target.removeFilter(installed)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("moto.stepfunctions")]


def test_without_the_filters_the_interpreter_prints_both_lines(interpreter, caplog) -> None:
    # Given moto's interpreter as it comes, When an execution runs the constructs the jobs definition uses
    with caplog.at_level(logging.WARNING):
        assert interpreter() == "FAILED"
    # Then it logs the known-gap warning and the IsPresent probe (what `make demo` used to show)
    logged = lines(caplog)
    assert any(m.startswith("ToleratedFailurePercentagePath declarations") for m in logged)
    assert any("NoSuchJsonPathError" in m and "'$.manifest'" in m for m in logged)


def test_the_local_stack_filters_drop_exactly_those_lines_and_keep_real_errors(interpreter, caplog) -> None:
    # Given the filters the local stack installs (twice: installing is idempotent)
    quiet_interpreter()
    quiet_interpreter()
    # When the same execution runs
    with caplog.at_level(logging.WARNING):
        assert interpreter() == "FAILED"
    logged = lines(caplog)
    # Then neither expected line is printed
    assert not any(m.startswith("ToleratedFailurePercentagePath declarations") for m in logged)
    assert not any("NoSuchJsonPathError" in m and "'$.manifest'" in m for m in logged)
    # And the genuine mistake still is: the missing Parameters path and the execution's failure
    assert any("NoSuchJsonPathError" in m and "'$.not_in_the_input'" in m for m in logged)
    assert any("Exception=FailureEventException, Error=States.Runtime" in m for m in logged)
    assert len(logging.getLogger(interpreter_logs.EVAL_LOGGER).filters) == 1
