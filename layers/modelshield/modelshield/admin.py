"""Security Engineer operations shared by the CLI and the API: apply security groups, request rescans.

One implementation each, so both entry points check the same things and write the same audit records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from modelshield.audit import AuditAction
from modelshield.models import ArtifactState
from modelshield.policy.groups import SecurityGroup
from modelshield.rescan import artifacts_of_group, enqueue_rescans
from modelshield.store.audit import append_if_configured
from modelshield.store.groups import GroupNotFound, GroupStore, GroupVersionConflict


def apply_groups(
    store: GroupStore, groups: Sequence[SecurityGroup], *, origin: str, principal: str | None = None
) -> list[dict[str, Any]]:
    """Store `groups`, each as a versioned conditional write, and audit every real change.

    Every version a group states is checked before anything is written, so a stale file changes nothing.
    Returns one `{"name", "change", "from", "to"}` per group (change: created | updated | unchanged).
    """
    current = {g.name: store.find(g.name) for g in groups}
    for group in groups:
        if "version" in group.model_fields_set:
            stored = current[group.name]
            base = stored.version if stored else 0
            if base != group.version:
                raise GroupVersionConflict(
                    f"{origin}: group {group.name!r} says version {group.version} but the stored one is "
                    f"version {base}: run `modelshield groups show {group.name}`, re-apply your edit, retry"
                )
    audit = {"principal": principal} if principal else {}
    changes = []
    for group in groups:
        before = current[group.name]
        expected = group.version if "version" in group.model_fields_set else (before.version if before else 0)
        after = store.put(group, expected_version=expected)
        if before is None:
            change = "created"
        elif after.version == before.version:
            change = "unchanged"
        else:
            change = "updated"
        from_version = before.version if before else None
        if change != "unchanged":
            append_if_configured(
                AuditAction.GROUP_CHANGE,
                reason=f"group {group.name} {change} from {origin}",
                detail={
                    "group": group.name,
                    "change": change,
                    "to_version": after.version,
                    "from_version": from_version,
                },
                **audit,
            )
        changes.append({"name": group.name, "change": change, "from": from_version, "to": after.version})
    return changes


def request_rescan(
    *,
    groups: Sequence[SecurityGroup],
    artifacts: Iterable[ArtifactState],
    sqs: Any,
    queue_url: str,
    group: str | None,
    principal: str | None = None,
) -> tuple[str | None, list[ArtifactState]]:
    """Queue a rescan of `group`'s artifacts (all artifacts when None) and audit it.

    Returns the request id (None when there was nothing to rescan) and the artifact versions queued.
    """
    if group is not None and group not in {g.name for g in groups}:
        raise GroupNotFound(
            f"no security group named {group!r} (known: {', '.join(sorted(g.name for g in groups))})"
        )
    states = artifacts_of_group(artifacts, groups, group)
    if not states:
        return None, []
    request_id = enqueue_rescans(sqs, queue_url, states)
    append_if_configured(
        AuditAction.RESCAN,
        request_id=request_id,
        reason=f"rescan of {group or 'all groups'}",
        detail={"group": group, "artifacts": len(states)},
        **({"principal": principal} if principal else {}),
    )
    return request_id, states
