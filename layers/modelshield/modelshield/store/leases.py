"""Per-artifact leases: one writer at a time decides and writes an artifact's consumer-facing vault key.

Two versions of one key processed at once would otherwise both read "nothing newer is released" and
both write `<key>`, the slower writer winning whatever the versions' order. A lease is one item in the
idempotency table (`id` = `lease#<artifact id>`), taken with a conditional put and given back with a
conditional delete; an expired lease (its holder was killed) can be taken over. Its expiry is the
table's TTL attribute, so abandoned leases also disappear on their own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from modelshield.errors import ModelShieldError
from modelshield.store.dynamo import is_conditional_failure

LEASE_PREFIX = "lease#"


class LeaseBusy(ModelShieldError):
    """Another worker holds the artifact's lease for longer than we may wait; SQS retries the event."""


class LeaseStore:
    def __init__(
        self,
        table_name: str,
        dynamodb: Any,
        *,
        ttl_seconds: int = 960,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = dynamodb.Table(table_name)
        self.ttl_seconds = ttl_seconds  # longer than one Lambda invocation (900 s) can hold it
        self.clock = clock

    def acquire(self, name: str) -> str | None:
        """Take the lease if it is free or expired; returns the holder token, or None if it is held."""
        token = uuid.uuid4().hex
        now = int(self.clock())
        try:
            self.table.put_item(
                Item={"id": LEASE_PREFIX + name, "holder": token, "expiration": now + self.ttl_seconds},
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": now},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return None
            raise
        return token

    def release(self, name: str, token: str) -> None:
        try:
            self.table.delete_item(
                Key={"id": LEASE_PREFIX + name},
                ConditionExpression="holder = :token",
                ExpressionAttributeValues={":token": token},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):  # taken over after expiry: not ours to delete
                raise

    @contextmanager
    def hold(self, name: str, *, wait_seconds: float = 60.0, poll_seconds: float = 0.1) -> Iterator[None]:
        """Hold the lease for the block, waiting up to `wait_seconds` for it."""
        deadline = time.monotonic() + wait_seconds
        while (token := self.acquire(name)) is None:
            if time.monotonic() > deadline:
                raise LeaseBusy(
                    f"artifact {name} is being written by another worker for over {wait_seconds:.0f}s; "
                    "the event is retried"
                )
            time.sleep(poll_seconds)
        try:
            yield
        finally:
            self.release(name, token)
