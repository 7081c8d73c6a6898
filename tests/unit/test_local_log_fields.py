"""Local-stack log lines name the function that wrote them, although the pollers of several functions
share one process and one Powertools logger (whose context keys are process-wide)."""

from __future__ import annotations

import io
import json
import logging
import threading

from modelshield.local.stack import LocalContext, name_functions_in_log_lines
from modelshield.observability import logger


def test_concurrent_invocations_of_two_functions_each_log_their_own_name() -> None:
    # Given the local stack's log filter and a stream in Powertools' JSON format
    name_functions_in_log_lines()
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(logger.registered_formatter)
    logger.addHandler(sink)
    both_started = threading.Barrier(2)

    @logger.inject_lambda_context
    def handler(event: dict[str, str], context: LocalContext) -> None:
        both_started.wait(timeout=10)  # the second invocation's keys are appended before anyone logs
        logger.info("working", extra={"who": event["who"]})

    # When ScanFunction and RescanFunction are invoked at the same time on two threads
    threads = [
        threading.Thread(target=lambda n=name: handler({"who": n}, LocalContext(n, 128, 30)))
        for name in ("ScanFunction", "RescanFunction")
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        logger.removeHandler(sink)
    # Then each line names its own function and request
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if '"working"' in line]
    assert len(lines) == 2
    for line in lines:
        assert line["function_name"] == line["who"], line
        assert line["function_arn"].endswith(f":function:{line['who']}")
    assert lines[0]["function_request_id"] != lines[1]["function_request_id"]
