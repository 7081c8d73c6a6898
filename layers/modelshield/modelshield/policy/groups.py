"""Security groups, sources and rule settings, and loading them from YAML with line-numbered errors.

A groups file looks like this (see examples/groups.yaml)::

    groups:
      - name: S3-Production
        kms_key_id: alias/modelshield-production   # omit for the stack's default key
        sources:
          - {type: s3, bucket: "${IngestBucket}", prefix: production/}
        rules:
          MS-LICENSE: {settings: {approved_licenses: [apache-2.0, mit]}}
          MS-SIZE-LIMIT: {blocking: false, settings: {max_bytes: 10 GiB}}

A rule listed in a group is enabled and blocking unless it says otherwise; a rule not listed takes its
catalogue default (the content-safety policy). `${IngestBucket}` in a source's bucket is the stack's
ingest bucket, substituted at load time; when it is not known (offline validation, local scans) it
matches any bucket, as `"*"` does.

Errors name the file, line and field (`groups.yaml:12: groups[0].rules.MS-LICENSE.blocking: ...`)
because a security engineer editing policy must not have to guess what was rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from modelshield.errors import UsageError
from modelshield.models import RuleId
from modelshield.policy.catalog import CATALOG
from modelshield.policy.rule_registry import RuleSetting, RuleSpec

SourceType = Literal["s3", "huggingface", "local"]
INGEST_BUCKET_PLACEHOLDER = "${IngestBucket}"
ANY_BUCKET = "*"
DEFAULT_GROUP = "default"
CONTENT_SAFETY_GROUP = "content-safety"
MAX_GROUPS_FILE_BYTES = 1 << 20  # a groups file is policy, not data
MAX_YAML_NODES = 100_000  # after alias expansion: stops "billion laughs" documents

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# -- models ------------------------------------------------------------------------------------------
class Source(BaseModel):
    """Where artifacts live: a bucket (or "*") and a key prefix, with the type that supplies metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SourceType
    bucket: str = ANY_BUCKET
    prefix: str = ""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if value in (ANY_BUCKET, INGEST_BUCKET_PLACEHOLDER) or _BUCKET.match(value):
            return value
        raise ValueError(
            f"{value!r} is not an S3 bucket name, '*' (any bucket) or {INGEST_BUCKET_PLACEHOLDER}"
        )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError("a key prefix must not start with '/' (S3 keys do not)")
        return value

    def matches(self, bucket: str, key: str) -> bool:
        """Whether an object is under this source. A query bucket of "*" matches every source bucket."""
        bucket_ok = ANY_BUCKET in (self.bucket, bucket) or self.bucket == bucket
        return bucket_ok and key.startswith(self.prefix)


def _setting_class(spec: RuleSpec) -> type[RuleSetting[Any]]:
    """A rule's group-setting class, derived from its spec: the id narrowed to it, its settings model."""
    name = spec.id.value.removeprefix("MS-").title().replace("-", "") + "RuleSetting"
    return create_model(  # type: ignore[call-overload, no-any-return]
        name,
        __base__=RuleSetting[spec.settings_model],  # type: ignore[name-defined]
        __module__=__name__,
        id=(Literal[spec.id], ...),
        settings=(spec.settings_model, Field(default_factory=spec.settings_model)),
    )


RULE_SETTING_CLASSES: dict[RuleId, type[RuleSetting[Any]]] = {
    r: _setting_class(s) for r, s in CATALOG.items()
}
RuleSettingModel = RuleSetting[Any]  # any rule's setting (each is an instance of its derived class)
# One rule's setting in a group; the `id` picks the class.
RuleSettingUnion = Annotated[Union[tuple(RULE_SETTING_CLASSES.values())], Field(discriminator="id")]  # noqa: UP007
_RULE_ADAPTER: TypeAdapter[RuleSettingModel] = TypeAdapter(RuleSettingUnion)


def default_rule_setting(rule: RuleId) -> RuleSettingModel:
    """The catalogue default for a rule a group does not mention."""
    spec = CATALOG[rule]
    return _RULE_ADAPTER.validate_python(
        {"id": rule.value, "enabled": spec.default_enabled, "blocking": spec.default_blocking}
    )


class SecurityGroup(BaseModel):
    """A named set of rule settings for the artifacts of its sources, and the key that protects them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    version: int = Field(1, ge=1, strict=True)  # bumped by the store on every change
    kms_key_id: str | None = None  # alias or ARN; None: the stack's default key
    max_data_key_age_days: int = Field(365, ge=1, le=36_500, strict=True)
    # Days the plaintext upload stays in the ingest bucket once its vault/quarantine copy is verified and
    # recorded; 0 (default): removed at once. Only ModelShield reads it meanwhile (see README, Security).
    plaintext_retention_days: int = Field(0, ge=0, le=3650, strict=True)
    sources: list[Source] = Field(default_factory=list)
    rules: dict[RuleId, RuleSettingUnion] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _GROUP_NAME.match(value):
            raise ValueError(
                "a group name is 1-64 letters, digits, '.', '_' or '-', starting with a letter/digit"
            )
        return value

    @field_validator("kms_key_id")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not (
            value.startswith(("alias/", "arn:")) or re.fullmatch(r"[0-9a-f-]{36}", value)
        ):
            raise ValueError("kms_key_id must be an alias (alias/...), a key ARN, or a key id")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _inject_ids(cls, value: Any) -> Any:
        """YAML keys rules by id; the models carry it too, so copy the key into each body."""
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for key, body in value.items():
            if body is None:
                body = {}
            if isinstance(body, Mapping):
                body = {"id": key, **body}
            out[key] = body
        return out

    @model_validator(mode="after")
    def _ids_match_keys(self) -> SecurityGroup:
        for key, setting in self.rules.items():
            if setting.rule != key:
                raise ValueError(f"rule {key} has a body with id {setting.rule}")
        return self

    def rule(self, rule: RuleId) -> RuleSettingModel:
        """This group's setting for a rule: its own, or the catalogue default."""
        return self.rules.get(rule) or default_rule_setting(rule)

    def effective_rules(self) -> list[RuleSettingModel]:
        """Every rule in catalogue order, as this group evaluates it."""
        return [self.rule(rule) for rule in CATALOG]


class GroupsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[SecurityGroup]


# -- YAML with line numbers ---------------------------------------------------------------------------
Path_ = tuple[str | int, ...]


def _compose(text: str, origin: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML safely, keeping the line of every key and item for error messages.

    Rejects duplicate keys (PyYAML silently keeps the last one, which would hide a policy edit) and
    documents whose aliases expand past MAX_YAML_NODES.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is not None:
            _walk(node, (), lines, origin, [0])
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise UsageError(f"{origin}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{origin}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], origin: str, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_YAML_NODES:
        raise UsageError(f"{origin}: document too large (more than {MAX_YAML_NODES} nodes after aliases)")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merged keys keep their parent's line
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                field = _display((*path, key))
                raise UsageError(f"{origin}:{line}: {field}: duplicate key (first set on line {seen[key]})")
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, origin, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, origin, count)


def _display(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _locate(loc: tuple[Any, ...], lines: dict[Path_, int]) -> tuple[Path_, int]:
    """Map a pydantic error location onto the YAML: skip union tags, keep the deepest known line."""
    path: Path_ = ()
    shown: list[str | int] = []
    for part in loc:
        if part == "[key]":
            continue
        candidate = (*path, part)
        if candidate in lines:
            path = candidate
            shown.append(part)
        elif shown and part == shown[-1]:
            continue  # the discriminator tag repeats the rule id
        elif isinstance(part, str) and not part.startswith(("function-", "union[")):
            shown.append(part)  # a missing or unknown field: name it, line of its parent
    return tuple(shown), lines.get(path, 1)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that owns the last element of an error location, to list its allowed fields."""
    current: Any = GroupsFile
    for part in loc:
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return current
            current = current.model_fields[part].annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        elif get_origin(current) in (Union, UnionType):
            members = [m for m in get_args(current) if isinstance(m, type) and issubclass(m, BaseModel)]
            tagged = [m for m in members if part in get_args(m.model_fields["id"].annotation)]
            if tagged:
                current = tagged[0]
            elif len(members) == 1:
                current = members[0]
            else:
                return None
        else:
            return None
    return None


def _message(error: Mapping[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "enum" and loc and loc[-1] == "[key]":
        return f"unknown rule id {error['input']!r} (known: {', '.join(CATALOG)})"
    if kind == "union_tag_invalid":
        return f"unknown rule id {error['input'].get('id')!r} (known: {', '.join(CATALOG)})"
    if kind == "extra_forbidden":
        owner = _model_at((*loc[:-1], ""))
        allowed = f" (allowed here: {', '.join(owner.model_fields)})" if owner else ""
        return f"unknown field{allowed}"
    if kind == "bool_type":
        return f"must be true or false, not {error['input']!r}"
    if kind == "missing":
        return "required field is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def _validation_errors(exc: ValidationError, lines: dict[Path_, int], origin: str) -> UsageError:
    found: dict[str, tuple[int, str]] = {}
    for error in exc.errors():
        shown, line = _locate(error["loc"], lines)
        field = _display(shown)
        found.setdefault(field, (line, f"{origin}:{line}: {field}: {_message(error)}"))
    messages = [text for _, text in sorted(found.values(), key=lambda item: item[0])]
    return UsageError("invalid security groups\n  " + "\n  ".join(messages[:20]))


def _substitute(groups: list[SecurityGroup], ingest_bucket: str | None) -> list[SecurityGroup]:
    bucket = ingest_bucket or ANY_BUCKET
    out = []
    for group in groups:
        sources = [
            s.model_copy(update={"bucket": bucket}) if s.bucket == INGEST_BUCKET_PLACEHOLDER else s
            for s in group.sources
        ]
        out.append(group.model_copy(update={"sources": sources}))
    return out


def _check_unique(groups: list[SecurityGroup], lines: dict[Path_, int], origin: str) -> None:
    names: dict[str, int] = {}
    sources: dict[tuple[str, str], str] = {}
    for i, group in enumerate(groups):
        line = lines.get(("groups", i, "name"), 1)
        if group.name in names:
            raise UsageError(f"{origin}:{line}: groups[{i}].name: duplicate group name {group.name!r}")
        names[group.name] = i
        for j, source in enumerate(group.sources):
            where = (source.bucket, source.prefix)
            if where in sources:
                line = lines.get(("groups", i, "sources", j), line)
                raise UsageError(
                    f"{origin}:{line}: groups[{i}].sources[{j}]: bucket {source.bucket!r} prefix "
                    f"{source.prefix!r} is already a source of group {sources[where]!r} "
                    "(an artifact must resolve to exactly one group)"
                )
            sources[where] = group.name


def load_groups(
    path_or_text: str | Path, *, ingest_bucket: str | None = None, origin: str | None = None
) -> list[SecurityGroup]:
    """Security groups from a YAML file (a Path, or a one-line str ending .yaml/.yml) or YAML text.

    `ingest_bucket` replaces `${IngestBucket}` in sources (unknown: any bucket). `origin` names
    YAML text in error messages. Raises UsageError with "file:line: field: problem" lines.
    """
    return load_groups_with_lines(path_or_text, ingest_bucket=ingest_bucket, origin=origin)[0]


def load_groups_with_lines(
    path_or_text: str | Path, *, ingest_bucket: str | None = None, origin: str | None = None
) -> tuple[list[SecurityGroup], dict[Path_, int], str]:
    """`load_groups`, plus the YAML line of every field (`("groups", 0, "kms_key_id") -> 7`) and the
    origin, so that checks made after loading (keys exist, sources free) can name the line at fault."""
    text, read_origin = _read(path_or_text)
    origin = origin or read_origin
    data, lines = _compose(text, origin)
    if isinstance(data, list):  # a bare list of groups is accepted too
        data = {"groups": data}
        lines = {("groups", *k): v for k, v in lines.items()}
    if not isinstance(data, dict):
        raise UsageError(f"{origin}:1: expected a mapping with a `groups:` list")
    try:
        parsed = GroupsFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_errors(exc, lines, origin) from None
    _check_unique(parsed.groups, lines, origin)
    return _substitute(parsed.groups, ingest_bucket), lines, origin


def _read(path_or_text: str | Path) -> tuple[str, str]:
    is_path = isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and path_or_text.endswith((".yaml", ".yml"))
    )
    if not is_path:
        text = str(path_or_text)
        origin = "<groups>"
    else:
        path = Path(path_or_text)
        try:
            size = path.stat().st_size
            if size > MAX_GROUPS_FILE_BYTES:
                raise UsageError(f"{path}: {size} bytes is too large for a groups file")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read: {exc}") from None
        origin = str(path)
    if len(text) > MAX_GROUPS_FILE_BYTES:
        raise UsageError(f"{origin}: too large for a groups file")
    return text, origin


def group_from_dict(data: Mapping[str, Any]) -> SecurityGroup:
    """A group from its stored JSON form (the groups table, the API)."""
    return SecurityGroup.model_validate(dict(data))


# -- defaults -----------------------------------------------------------------------------------------
@cache
def _default_groups_text() -> str:
    return resources.files("modelshield.policy").joinpath("default_groups.yaml").read_text(encoding="utf-8")


def default_groups(ingest_bucket: str | None = None) -> list[SecurityGroup]:
    """The seeded groups (default_groups.yaml) with `${IngestBucket}` set to the stack's bucket."""
    text = _default_groups_text()
    return load_groups(text, ingest_bucket=ingest_bucket, origin="default_groups.yaml")


def content_safety_group() -> SecurityGroup:
    """The CLI's built-in policy: every rule at its catalogue default (scanner rules block)."""
    return SecurityGroup(
        name=CONTENT_SAFETY_GROUP,
        description="Built-in content safety: block code execution, unknown callables, malformed or unsafe "
        "archives, backdoors and incomplete scans; provenance and compliance rules off.",
    )
