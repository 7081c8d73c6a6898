"""Checks a groups file must pass against the live stack before `groups apply` stores it.

Validation (policy/groups.py) proves a file is well-formed; these prove it will work where it lands:

- a group's `kms_key_id` names a KMS key that exists, is enabled, is a symmetric encryption key, and
  yields a data key (KMS `GenerateDataKey` with `DryRun`, under the context the scanner uses). A group
  whose key is missing would make every upload under it fail: the walk in issue 15 found such uploads
  stalling in the dead-letter queue. So a missing or unusable key refuses the whole file.
- no source (bucket + prefix) is already a source of another stored group that the file leaves in
  place: an artifact must resolve to exactly one group.

Every problem names the file, line, field and group, like validation errors do. Problems KMS cannot decide
for the caller (the caller may not GenerateDataKey itself; the scan role's rights are what count) are
warnings. `preflight()` is the one entry point: `groups apply` (CLI) and `PUT /groups` (API) both call it,
and any error refuses the whole document with `GroupsRefused` (exit 2 / HTTP 400, each problem listed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from modelshield.aws import unreachable
from modelshield.errors import GroupsRefused
from modelshield.models import CTX_ARTIFACT, CTX_PURPOSE, PURPOSE_ARTIFACT
from modelshield.policy.groups import SecurityGroup

Path_ = tuple[str | int, ...]
_MISSING = frozenset({"NotFoundException", "InvalidArnException", "InvalidKeyId.NotFound"})


@dataclass(frozen=True)
class Problem:
    level: Literal["error", "warning"]
    line: int
    field: str  # the path in the document: groups[1].kms_key_id
    message: str
    group: str = ""  # the name of the group at that path

    def render(self, origin: str) -> str:
        of = f" (group {self.group!r})" if self.group else ""
        return f"{origin}:{self.line}: {self.field}{of}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "line": self.line,
            "group": self.group,
            "field": self.field,
            "message": self.message,
        }


def preflight(
    groups: Sequence[SecurityGroup],
    lines: Mapping[Path_, int],
    origin: str,
    *,
    kms: Any,
    stored: Sequence[SecurityGroup],
) -> list[Problem]:
    """Check `groups` against the live stack; raise GroupsRefused listing every error, else return the
    warnings (for the caller to show). Nothing is stored either way."""
    problems = check_groups(groups, lines, kms=kms, stored=stored)
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise GroupsRefused(
            f"{origin}: not applied, nothing was stored ({len(errors)} problem(s) against the live stack)"
            + "".join(f"\n  {p.render(origin)}" for p in errors),
            problems=[p.as_json() for p in problems],
        )
    return problems


def check_groups(
    groups: Sequence[SecurityGroup],
    lines: Mapping[Path_, int],
    *,
    kms: Any,
    stored: Sequence[SecurityGroup],
) -> list[Problem]:
    """Every problem with applying `groups` over the `stored` ones, in file order."""
    problems: list[Problem] = []
    checked: dict[str, list[tuple[str, str]]] = {}
    for i, group in enumerate(groups):
        if group.kms_key_id:
            where = ("groups", i, "kms_key_id")
            line = lines.get(where, lines.get(("groups", i), 1))
            if group.kms_key_id not in checked:
                checked[group.kms_key_id] = _check_key(kms, group.kms_key_id)
            for level, message in checked[group.kms_key_id]:
                problems.append(Problem(level, line, f"groups[{i}].kms_key_id", message, group.name))  # type: ignore[arg-type]
    problems.extend(_overlaps(groups, lines, stored))
    return sorted(problems, key=lambda p: p.line)


def _check_key(kms: Any, key_id: str) -> list[tuple[str, str]]:
    try:
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _MISSING:
            return [
                (
                    "error",
                    f"KMS key {key_id!r} does not exist in this account and region: create it (or its "
                    "alias), or remove kms_key_id to use the stack's default key",
                )
            ]
        if code in ("AccessDeniedException", "AccessDenied"):
            return [("warning", f"cannot describe KMS key {key_id!r} ({code}): not checked")]
        return [("error", f"cannot check KMS key {key_id!r}: {code or exc}")]
    except BotoCoreError as exc:
        if (down := unreachable(exc)) is not None:
            raise down from None
        return [("error", f"cannot check KMS key {key_id!r}: {exc}")]
    state = meta.get("KeyState", "Enabled")
    if state != "Enabled" or meta.get("Enabled") is False:
        return [("error", f"KMS key {key_id!r} is {state}: enable it, or name another key")]
    usage, spec = meta.get("KeyUsage", "ENCRYPT_DECRYPT"), meta.get("KeySpec", "SYMMETRIC_DEFAULT")
    if usage != "ENCRYPT_DECRYPT" or spec != "SYMMETRIC_DEFAULT":
        return [
            (
                "error",
                f"KMS key {key_id!r} is {spec}/{usage}; ModelShield needs a symmetric encryption key "
                "(SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) to generate data keys",
            )
        ]
    return _dry_data_key(kms, key_id)


def _dry_data_key(kms: Any, key_id: str) -> list[tuple[str, str]]:
    """Ask KMS whether a data key would be issued, without issuing one (DryRun)."""
    try:
        kms.generate_data_key(
            KeyId=key_id,
            KeySpec="AES_256",
            # The vault key's policy refuses data keys without an artifact in the context, as it should.
            EncryptionContext={CTX_PURPOSE: PURPOSE_ARTIFACT, CTX_ARTIFACT: "modelshield-preflight"},
            DryRun=True,
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "DryRunOperationException":
            return []  # KMS: "the request would have succeeded"
        if code in ("AccessDeniedException", "AccessDenied"):
            return [
                (
                    "warning",
                    f"you may not GenerateDataKey with {key_id!r}; the scan role must be allowed to "
                    "(template.yaml grants it the vault key): not checked",
                )
            ]
        return [("error", f"KMS key {key_id!r} does not issue data keys: {code or exc}")]
    except BotoCoreError as exc:
        return [("error", f"cannot check KMS key {key_id!r}: {exc}")]
    return []  # an endpoint without DryRun support issued (and discarded) a real data key


def _overlaps(
    groups: Sequence[SecurityGroup], lines: Mapping[Path_, int], stored: Sequence[SecurityGroup]
) -> list[Problem]:
    names = {g.name for g in groups}
    taken = {
        (source.bucket, source.prefix): other.name
        for other in stored
        if other.name not in names
        for source in other.sources
    }
    problems = []
    for i, group in enumerate(groups):
        for j, source in enumerate(group.sources):
            owner = taken.get((source.bucket, source.prefix))
            if owner is not None:
                line = lines.get(("groups", i, "sources", j), lines.get(("groups", i), 1))
                problems.append(
                    Problem(
                        "error",
                        line,
                        f"groups[{i}].sources[{j}]",
                        f"bucket {source.bucket!r} prefix {source.prefix!r} is already a source of the "
                        f"stored group {owner!r} (an artifact must resolve to exactly one group): change "
                        f"the prefix, or move the source out of {owner!r} in the same file",
                        group.name,
                    )
                )
    return problems
