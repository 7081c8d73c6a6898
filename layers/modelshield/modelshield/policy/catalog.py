"""The rule catalogue as every reader sees it: `explain`, the SARIF rule descriptors and docs/rules.md.

Rules register themselves (spec and evaluation together) in `rules.py` through `rule_registry.rule`;
importing this module loads them, in the order they are evaluated and listed.
"""

from __future__ import annotations

from modelshield.models import RuleId, Severity
from modelshield.policy import rules as _rules  # noqa: F401  (registers every rule)
from modelshield.policy.rule_registry import EVALUATIONS, SOURCE_TYPES, SPECS, Evaluate, RuleSpec

CATALOG: dict[RuleId, RuleSpec] = SPECS
MANDATORY_RULES = frozenset(r for r, spec in CATALOG.items() if spec.mandatory)
SCANNER_RULES = tuple(r for r, spec in CATALOG.items() if spec.kind == "scanner")

__all__ = [
    "CATALOG",
    "MANDATORY_RULES",
    "SCANNER_RULES",
    "SOURCE_TYPES",
    "RuleSpec",
    "evaluation",
    "rule_spec",
]


def evaluation(rule: RuleId) -> Evaluate:
    """The function that evaluates `rule` (registered with its spec)."""
    return EVALUATIONS[rule]


def rule_spec(rule: RuleId | str) -> RuleSpec:
    """The catalogue entry for a rule id (case-insensitive); KeyError names the known ids."""
    try:
        return CATALOG[RuleId(str(rule).strip().upper())]
    except ValueError:
        known = ", ".join(CATALOG)
        raise KeyError(f"unknown rule id {rule!r} (known: {known})") from None


def settings_help(spec: RuleSpec) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for each setting of a rule, for `explain` and the docs."""
    rows = []
    for name, info in spec.settings_model.model_fields.items():
        annotation = info.annotation
        shown = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        shown = shown.replace("typing.", "").replace("modelshield.models.", "")
        default = info.get_default(call_default_factory=True)
        rows.append((name, shown, _show(default), info.description or ""))
    return rows


def _show(value: object) -> str:
    if isinstance(value, Severity):
        return value.name.lower()
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if hasattr(value, "value"):
        return str(value.value)
    return repr(value) if isinstance(value, str) else str(value)
