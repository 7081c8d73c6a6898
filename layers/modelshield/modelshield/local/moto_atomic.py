"""Make moto's DynamoDB answer one request at a time, as DynamoDB's own per-item atomicity would.

moto runs each request on the caller's thread (in-process) or on one of the server's request threads
(`ThreadedMotoServer`), and its DynamoDB backend takes no lock: a conditional write reads the item,
evaluates the condition and stores the new item as three Python steps, so two threads can both pass
`attribute_not_exists(id)`. Measured before this module: six threads taking one lease at once got two
holders in 7 of 200 rounds, and the artifact lease (store/leases.py) then let two versions of one key
both decide "nothing newer is released". A transaction's rollback is worse: it puts back a copy of the
table made when the transaction began, dropping whatever other threads wrote meanwhile.

DynamoDB itself makes each conditional write and each transaction atomic, so the local stack and the
tests serialize moto's DynamoDB and DynamoDB Streams requests behind one lock. No DynamoDB action waits
or calls out to other services, so the lock is held only for the action itself.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.RLock()


def make_dynamodb_atomic() -> None:
    """Patch moto's DynamoDB and DynamoDB Streams handlers (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        original = handler.call_action
        if getattr(original, "_modelshield_atomic", False):
            continue

        def call_action(self: Any, _original: Any = original) -> Any:
            with _lock:
                return _original(self)

        call_action._modelshield_atomic = True  # type: ignore[attr-defined]
        handler.call_action = call_action  # type: ignore[method-assign]
