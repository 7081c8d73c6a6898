"""The groups table: one item per security group (PK `name`), holding the group and its version.

Every change is a conditional write that bumps `version`, so two engineers applying edits at once
cannot silently overwrite each other: the second gets GroupVersionConflict and re-applies on top.
Seeding only creates missing groups; it never reverts an edit made after deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from modelshield.aws import unreachable
from modelshield.errors import GroupNotFound, GroupStoreError, GroupVersionConflict, ModelShieldError
from modelshield.models import utcnow
from modelshield.policy.groups import SecurityGroup, default_groups
from modelshield.store.dynamo import from_item, is_conditional_failure, to_item

__all__ = ["GroupNotFound", "GroupStore", "GroupStoreError", "GroupVersionConflict"]


def _same(a: SecurityGroup, b: SecurityGroup) -> bool:
    return a.model_dump(mode="json", exclude={"version"}) == b.model_dump(mode="json", exclude={"version"})


class GroupStore:
    def __init__(self, table_name: str, dynamodb: Any, *, ingest_bucket: str | None = None) -> None:
        self.table_name = table_name
        self.table = dynamodb.Table(table_name)
        self.ingest_bucket = ingest_bucket  # what ${IngestBucket} in the built-in defaults stands for

    # -- reads ---------------------------------------------------------------------------------------
    def list(self) -> list[SecurityGroup]:
        """Every stored group, by name."""
        groups: list[SecurityGroup] = []
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        while True:
            page = self._call("list groups", self.table.scan, **kwargs)
            groups.extend(self._group(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(groups, key=lambda g: g.name)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def effective(self, *, on_defaults: Callable[[], None] | None = None) -> list[SecurityGroup]:
        """What the scanner evaluates with: the stored groups, or the built-in defaults while none are
        stored (a fresh deploy). The one place that fallback is written; `on_defaults` lets a caller
        say so (the CLI tells people on stderr that these are not stored ones)."""
        stored = self.list()
        if stored:
            return stored
        if on_defaults is not None:
            on_defaults()
        return default_groups(ingest_bucket=self.ingest_bucket)

    def get(self, name: str) -> SecurityGroup:
        """The stored group; GroupNotFound if there is none."""
        item = self._call(f"read group {name}", self.table.get_item, Key={"name": name}, ConsistentRead=True)
        if "Item" not in item:
            raise GroupNotFound(f"no security group named {name!r} in table {self.table_name}")
        return self._group(item["Item"])

    def find(self, name: str) -> SecurityGroup | None:
        try:
            return self.get(name)
        except GroupNotFound:
            return None

    # -- writes --------------------------------------------------------------------------------------
    def put(self, group: SecurityGroup, expected_version: int | None = None) -> SecurityGroup:
        """Create or update a group, bumping its version; returns what was stored.

        `expected_version` is the stored version this edit was based on (0: the group must not exist yet).
        Without it the current stored version is read first, so a concurrent write between that read
        and this write still fails rather than being lost. An edit that changes nothing is not written.
        """
        current = self.find(group.name)
        base = current.version if current else 0
        if expected_version is not None and expected_version != base:
            raise GroupVersionConflict(
                f"group {group.name!r} is at version {base}, not {expected_version}: "
                "show it again, re-apply your edit on top, and retry"
            )
        if current is not None and _same(current, group):
            return current
        stored = group.model_copy(update={"version": base + 1})
        item = {**to_item(stored), "updated_at": utcnow().isoformat()}
        if current is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#n)"}
        else:
            condition = {"ConditionExpression": "#v = :base", "ExpressionAttributeValues": {":base": base}}
        names = {"#n": "name"} if current is None else {"#v": "version"}
        try:
            self.table.put_item(Item=item, ExpressionAttributeNames=names, **condition)
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise GroupVersionConflict(
                    f"group {group.name!r} changed while being written (expected version {base}); retry"
                ) from None
            raise self._error(f"write group {group.name}", exc) from None
        except BotoCoreError as exc:
            raise self._error(f"write group {group.name}", exc) from None
        return stored

    def seed_defaults(self, groups: list[SecurityGroup]) -> list[str]:
        """Create the groups that do not exist yet (names returned); existing ones are left alone."""
        created: list[str] = []
        for group in groups:
            item = {**to_item(group), "updated_at": utcnow().isoformat()}
            try:
                self.table.put_item(
                    Item=item,
                    ConditionExpression="attribute_not_exists(#n)",
                    ExpressionAttributeNames={"#n": "name"},
                )
            except ClientError as exc:
                if is_conditional_failure(exc):
                    continue
                raise self._error(f"seed group {group.name}", exc) from None
            except BotoCoreError as exc:
                raise self._error(f"seed group {group.name}", exc) from None
            created.append(group.name)
        return created

    # -- helpers -------------------------------------------------------------------------------------
    def _group(self, item: dict[str, Any]) -> SecurityGroup:
        data = from_item(item)
        data.pop("updated_at", None)
        try:
            return SecurityGroup.model_validate(data)
        except ValidationError as exc:
            raise GroupStoreError(
                f"group {data.get('name')!r} in table {self.table_name} is invalid: {exc.errors()[0]['msg']}"
            ) from None

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: Exception) -> ModelShieldError:
        if (down := unreachable(exc)) is not None:
            return down
        if isinstance(exc, ClientError):
            detail = exc.response.get("Error", {})
            reason = f"{detail.get('Code')}: {detail.get('Message')}"
        else:
            reason = str(exc)
        return GroupStoreError(f"cannot {what} (table {self.table_name}): {reason}")
