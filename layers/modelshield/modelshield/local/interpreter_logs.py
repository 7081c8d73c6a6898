"""Quiet the two log lines moto's Step Functions interpreter prints for every bulk job, and nothing else.

moto's ASL interpreter (LocalStack's) logs, for a definition that is correct in AWS:
* at parse time, a WARNING that `ToleratedFailurePercentagePath` "currently has no effect" (a known gap,
  listed in the README: the settle step applies the percentage from ModelShield's own counts);
* at run time, an ERROR `Exception=NoSuchJsonPathError ... '$.manifest'`: the `HasManifest` Choice asks
  `IsPresent` of `$.manifest`, and the interpreter logs the lookup that IsPresent is there to absorb.
Both arrive on stderr ahead of the job's progress bar. The filters below drop exactly those records (by
logger and message) and let every other warning and error through: a missing path anywhere else, a
failed task, an execution that ends in error.
"""

from __future__ import annotations

import logging

PARSER_LOGGER = "moto.stepfunctions.parser.asl.parse.preprocessor"
EVAL_LOGGER = "moto.stepfunctions.parser.asl.component.eval_component"
# The JSONPath the definition's `HasManifest` Choice probes with IsPresent (statemachine/jobs.asl.json).
PROBED_PATHS = ("$.manifest",)
KNOWN_GAPS = ("ToleratedFailurePercentagePath declarations currently have no effect",)


class _KnownGapWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and record.getMessage().startswith(KNOWN_GAPS))


class _IsPresentProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Exception=NoSuchJsonPathError"):
            return True
        return not any(f"'literal_value': '{path}'" in message for path in PROBED_PATHS)


def quiet_interpreter() -> None:
    """Install the filters once (idempotent): the local stack calls this before it starts the engine."""
    for name, kind in ((PARSER_LOGGER, _KnownGapWarnings), (EVAL_LOGGER, _IsPresentProbes)):
        target = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in target.filters):
            target.addFilter(kind())
