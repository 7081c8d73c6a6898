"""How a rule is registered: its spec and its evaluation together, as scanners register for a format.

    @rule(RuleSpec(id=RuleId.SIZE_LIMIT, title="Size limit", ..., settings_model=SizeSettings))
    def size_limit(setting: RuleSetting[SizeSettings], report: ScanReport, **_: object) -> Outcome:
        ...

`rules.py` holds every rule; `catalog.py` reads this registry for `explain`, SARIF and docs/rules.md;
`groups.py` derives each rule's group-setting class (`RuleSetting[<its settings model>]` narrowed to its
id) from the spec, and `engine.py` calls the evaluation. So adding a rule is a `RuleId`, a settings model
if it has settings, and one decorated function: nothing else to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from modelshield.models import Finding, RuleId, RuleStatus, Severity
from modelshield.policy.settings import parse_severity

SOURCE_TYPES = ("s3", "huggingface", "local")
SCAN_ONLY = {t: "none (read from the bytes)" for t in SOURCE_TYPES}


@dataclass(frozen=True)
class RuleSpec:
    id: RuleId
    title: str
    checks: str  # what the rule looks at, in one sentence
    rationale: str  # why a security engineer wants it
    category: str  # code-execution | integrity | provenance | compliance | resources
    kind: Literal["scanner", "policy"]  # raised by format scanners, or evaluated from metadata
    default_severity: Severity
    settings_model: type[BaseModel]
    metadata: dict[str, str] = field(default_factory=lambda: dict(SCAN_ONLY))  # per source type
    default_enabled: bool = True
    default_blocking: bool = True
    mandatory: bool = False  # cannot be disabled or made non-blocking


class Outcome(BaseModel):
    """What one rule's evaluation found; the engine adds blocking and severity from the group."""

    status: RuleStatus
    message: str
    findings: list[Finding] = Field(default_factory=list)
    severity: Severity | None = None


def passed(message: str) -> Outcome:
    return Outcome(status=RuleStatus.PASS, message=message)


def failed(message: str, **extra: Any) -> Outcome:
    return Outcome(status=RuleStatus.FAIL, message=message, **extra)


def errored(message: str) -> Outcome:
    return Outcome(status=RuleStatus.ERROR, message=message)


S = TypeVar("S", bound=BaseModel)


class RuleSetting(BaseModel, Generic[S]):
    """One rule's setting in a group. `groups.py` derives one subclass per rule, narrowing `id` to it.

    `id` comes from the key under `rules:` in YAML and is declared first so that the validators below
    can see it and point a mandatory-rule error at the exact `enabled:`, `blocking:` or threshold line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RuleId
    enabled: StrictBool = True
    blocking: StrictBool = True
    severity: Severity | None = None  # overrides the catalogue's default severity
    settings: S

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Severity | None:
        return None if value is None else parse_severity(value)

    @field_serializer("severity")
    def _severity_name(self, value: Severity | None) -> str | None:
        return None if value is None else value.name.lower()

    @field_validator("enabled", "blocking")
    @classmethod
    def _mandatory(cls, value: bool, info: ValidationInfo) -> bool:
        rule = info.data.get("id")
        if rule in SPECS and SPECS[rule].mandatory and not value:
            what = "disabled" if info.field_name == "enabled" else "made non-blocking"
            raise ValueError(f"{rule} is mandatory and cannot be {what} ({info.field_name} must be true)")
        return value

    @field_validator("settings")
    @classmethod
    def _mandatory_threshold(cls, value: S, info: ValidationInfo) -> S:
        rule = info.data.get("id")
        threshold = getattr(value, "min_severity", Severity.INFO)
        if rule in SPECS and SPECS[rule].mandatory and threshold > Severity.INFO:
            raise ValueError(f"{rule} is mandatory: its min_severity cannot be raised above info")
        return value

    @property
    def rule(self) -> RuleId:
        return RuleId(self.id)

    @property
    def effective_severity(self) -> Severity:
        return self.severity if self.severity is not None else SPECS[self.rule].default_severity


Evaluate = Callable[..., Outcome]  # (setting, *, report, metadata, artifact_key) -> Outcome

SPECS: dict[RuleId, RuleSpec] = {}  # in registration order: the order rules are evaluated and listed
EVALUATIONS: dict[RuleId, Evaluate] = {}


def rule(*specs: RuleSpec) -> Callable[[Evaluate], Evaluate]:
    """Register `evaluate` as the evaluation of each spec (scanner rules share one evaluation)."""

    def decorate(evaluate: Evaluate) -> Evaluate:
        for spec in specs:
            if spec.id in SPECS:
                raise ValueError(f"rule {spec.id} is registered twice")
            SPECS[spec.id] = spec
            EVALUATIONS[spec.id] = evaluate
        return evaluate

    return decorate
