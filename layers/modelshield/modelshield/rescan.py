"""Rescans: when a group's rules change, re-evaluate the artifacts it owns.

A rescan is a work item on the scan queue, not work done by the caller: only the ScanFunction may read
ingest objects, and going through the queue gives rescans the same retries, dead-letter queue, idempotency
and records as uploads. Each request has its own id, so a rescan is never mistaken for a duplicate upload.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from modelshield.events import rescan_message
from modelshield.models import ArtifactState
from modelshield.policy.groups import SecurityGroup
from modelshield.policy.sources import resolve_group


def artifacts_of_group(
    states: Iterable[ArtifactState], groups: Sequence[SecurityGroup], group: str | None
) -> list[ArtifactState]:
    """Artifact versions the group owns now (by source) or evaluated last time; all when group is None."""
    selected = []
    for state in states:
        owner = resolve_group(groups, state.bucket, state.key)[0].name
        if group is None or owner == group or state.group == group:
            selected.append(state)
    return selected


def enqueue_rescans(sqs: Any, queue_url: str, states: Sequence[ArtifactState]) -> str:
    """Send one rescan work item per artifact version; returns the request id shared by them."""
    request_id = uuid.uuid4().hex
    for start in range(0, len(states), 10):
        batch = states[start : start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "MessageBody": rescan_message(s.bucket, s.key, s.version_id, request_id)}
                for n, s in enumerate(batch)
            ],
        )
        if response.get("Failed"):
            failed = ", ".join(
                f"{batch[int(f['Id'])].artifact_id}: {f.get('Message')}" for f in response["Failed"]
            )
            raise RuntimeError(f"could not queue rescans for: {failed}")
    return request_id
