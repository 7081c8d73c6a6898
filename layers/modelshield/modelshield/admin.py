"""Security Engineer operations shared by the CLI and the API: apply security groups, request rescans.

One implementation each, so both entry points check the same things and write the same audit records.
The caller passes the audit log (None: this process has none, e.g. the CLI without a stack) and who
acts (a verified identity, or a function returning one, asked only when a record is written).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from modelshield.audit import AuditAction, AuditLog
from modelshield.errors import GroupNotFound, GroupVersionConflict
from modelshield.models import ArtifactState
from modelshield.policy.groups import SecurityGroup
from modelshield.policy.sources import resolve_group
from modelshield.rescan import artifacts_of_group, enqueue_rescans
from modelshield.store.groups import GroupStore

Principal = str | Callable[[], str]
AFFECTED_LISTED = 25  # artifacts listed by a dry run; the count covers all of them


def _record(audit: AuditLog | None, principal: Principal, action: str, **fields: Any) -> None:
    if audit is not None:
        audit.append(action, principal=principal if isinstance(principal, str) else principal(), **fields)


def apply_groups(
    store: GroupStore,
    groups: Sequence[SecurityGroup],
    *,
    origin: str,
    audit: AuditLog | None,
    principal: Principal,
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
            _record(
                audit,
                principal,
                AuditAction.GROUP_CHANGE,
                reason=f"group {group.name} {change} from {origin}",
                detail={
                    "group": group.name,
                    "change": change,
                    "to_version": after.version,
                    "from_version": from_version,
                },
            )
        changes.append({"name": group.name, "change": change, "from": from_version, "to": after.version})
    return changes


def plan_groups(groups: Sequence[SecurityGroup], stored: Sequence[SecurityGroup]) -> list[dict[str, Any]]:
    """What `apply_groups` would report for `groups` over the `stored` ones, computed without writing."""
    by_name = {g.name: g for g in stored}
    changes = []
    for group in groups:
        before = by_name.get(group.name)
        if before is None:
            changes.append({"name": group.name, "change": "created", "from": None, "to": 1})
        elif _same_group(before, group):
            changes.append(
                {"name": group.name, "change": "unchanged", "from": before.version, "to": before.version}
            )
        else:
            changes.append(
                {"name": group.name, "change": "updated", "from": before.version, "to": before.version + 1}
            )
    return changes


def groups_after(groups: Sequence[SecurityGroup], stored: Sequence[SecurityGroup]) -> list[SecurityGroup]:
    """The groups the scanner would evaluate with once `groups` are stored over the `stored` ones (groups
    not in the document stay; with none stored, the document's groups replace the built-in defaults)."""
    merged = {g.name: g for g in stored}
    merged.update({g.name: g for g in groups})
    return sorted(merged.values(), key=lambda g: g.name)


def affected_artifacts(
    before: Sequence[SecurityGroup],
    after: Sequence[SecurityGroup],
    states: Iterable[ArtifactState],
    *,
    listed: int = AFFECTED_LISTED,
) -> dict[str, Any]:
    """The existing artifacts a groups change would touch: those that would resolve to another group
    (`group`), or stay in a group whose rules change (`rules`: a rescan may change their verdict) or
    whose KMS key changes (`kms_key_id`: rotation re-wraps them). One entry per artifact (its versions
    counted), sorted by artifact id; `count` is the total, `artifacts` at most `listed` of them."""
    found: dict[str, dict[str, Any]] = {}
    for state in states:
        if state.artifact_id in found:
            found[state.artifact_id]["versions"] += 1
            continue
        old = resolve_group(before, state.bucket, state.key)[0]
        new = resolve_group(after, state.bucket, state.key)[0]
        if old.name != new.name:
            changes = ["group"]
        else:
            changes = [
                what
                for what, differs in (
                    ("rules", _rules(old) != _rules(new)),
                    ("kms_key_id", old.kms_key_id != new.kms_key_id),
                )
                if differs
            ]
        if changes:
            found[state.artifact_id] = {
                "artifact": state.artifact_id,
                "versions": 1,
                "from_group": old.name,
                "to_group": new.name,
                "changes": changes,
                "verdict": state.verdict.value,
            }
        else:
            found[state.artifact_id] = {"versions": 1}  # seen, unaffected (its other versions too)
    affected = sorted((a for a in found.values() if "artifact" in a), key=lambda a: a["artifact"])
    return {"count": len(affected), "artifacts": affected[:listed], "truncated": len(affected) > listed}


def _rules(group: SecurityGroup) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in group.effective_rules()]


def _same_group(a: SecurityGroup, b: SecurityGroup) -> bool:
    return a.model_dump(mode="json", exclude={"version"}) == b.model_dump(mode="json", exclude={"version"})


def request_rescan(
    *,
    groups: Sequence[SecurityGroup],
    artifacts: Iterable[ArtifactState],
    sqs: Any,
    queue_url: str,
    group: str | None,
    audit: AuditLog | None,
    principal: Principal,
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
    _record(
        audit,
        principal,
        AuditAction.RESCAN,
        request_id=request_id,
        reason=f"rescan of {group or 'all groups'}",
        detail={"group": group, "artifacts": len(states)},
    )
    return request_id, states
