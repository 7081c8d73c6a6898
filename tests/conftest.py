"""Test-wide settings. `make fuzz` runs the property tests under the heavier `fuzz` profile."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from modelshield.local.moto_atomic import make_dynamodb_atomic

# Tests run Lambda containers on threads against in-process moto, whose DynamoDB is not atomic across
# threads (local/moto_atomic.py); the local stack makes the same patch.
make_dynamodb_atomic()

# Deep fuzzing for `make fuzz`: many more examples per parser, still bounded (no deadline per example,
# but each scanner's own time limit applies).
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
