"""Every rule as data: what it checks, why, what it needs, and how it behaves by default.

The catalogue is the single source for `modelshield explain`, the SARIF rule descriptors and
docs/rules.md. Defaults here are the built-in content-safety policy: scanner rules on and blocking,
policy rules off (they need settings a security engineer chooses: approved licenses, trusted keys).
`MS-SCAN-INCOMPLETE` and `MS-MALFORMED` are mandatory: a group cannot disable them or make them
non-blocking, because both mean "we could not show these bytes are safe".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from modelshield.models import RuleId, Severity
from modelshield.policy.settings import (
    AuthorSettings,
    FindingSettings,
    FormatSettings,
    HashPinSettings,
    LicenseSettings,
    SizeSettings,
)

SOURCE_TYPES = ("s3", "huggingface", "local")
_SCAN_ONLY = {t: "none (read from the bytes)" for t in SOURCE_TYPES}


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
    metadata: dict[str, str] = field(default_factory=lambda: dict(_SCAN_ONLY))  # per source type
    default_enabled: bool = True
    default_blocking: bool = True
    mandatory: bool = False  # cannot be disabled or made non-blocking


CATALOG: dict[RuleId, RuleSpec] = {
    spec.id: spec
    for spec in (
        RuleSpec(
            id=RuleId.SCAN_INCOMPLETE,
            title="Scan incomplete",
            checks="Every byte of the artifact was understood by a scanner within the limits and deadline.",
            rationale=(
                "An unknown format, a limit hit, a timeout or a scanner error means nobody looked at part of "
                "the file. Fail closed: what was not scanned cannot be called safe, so the verdict is ERROR."
            ),
            category="integrity",
            kind="scanner",
            default_severity=Severity.HIGH,
            settings_model=FindingSettings,
            mandatory=True,
        ),
        RuleSpec(
            id=RuleId.MALFORMED,
            title="Malformed artifact",
            checks="The file is structurally valid for its format (no truncation, trailing data, "
            "contradictory headers or parser differentials).",
            rationale=(
                "Malformed files are how payloads hide from scanners: loaders that are more lenient than the "
                "scanner read bytes the scanner never judged. Mandatory, like an incomplete scan."
            ),
            category="integrity",
            kind="scanner",
            default_severity=Severity.HIGH,
            settings_model=FindingSettings,
            mandatory=True,
        ),
        RuleSpec(
            id=RuleId.CODE_EXEC,
            title="Code execution on load",
            checks="No pickle global, Keras Lambda layer, custom op or template would run code, spawn "
            "processes, or open files or sockets when the model is loaded.",
            rationale=(
                "Loading a pickle-based model runs whatever callables it names (os.system, eval, "
                "subprocess). This is the classic model-supply-chain attack; one such finding blocks."
            ),
            category="code-execution",
            kind="scanner",
            default_severity=Severity.CRITICAL,
            settings_model=FindingSettings,
        ),
        RuleSpec(
            id=RuleId.CODE_UNKNOWN,
            title="Unknown callable",
            checks="Every callable the model imports on load is on the allowlist of known-safe ML globals.",
            rationale=(
                "A denylist is never complete: a callable on neither list might be harmless or might be a "
                "gadget. Content safety blocks it until someone reviews it and extends the allowlist."
            ),
            category="code-execution",
            kind="scanner",
            default_severity=Severity.HIGH,
            settings_model=FindingSettings,
        ),
        RuleSpec(
            id=RuleId.ARCHIVE_UNSAFE,
            title="Unsafe archive",
            checks="Containers have no path traversal, links, decompression bombs, or references that "
            "escape the model.",
            rationale=(
                "Model formats are zips and tars: a member named ../../.bashrc, a symlink or a bomb attacks "
                "the machine that unpacks the model even if the weights are harmless."
            ),
            category="integrity",
            kind="scanner",
            default_severity=Severity.HIGH,
            settings_model=FindingSettings,
        ),
        RuleSpec(
            id=RuleId.BACKDOOR,
            title="Architectural backdoor",
            checks="The computational graph (ONNX, Keras, TorchScript) has no trigger-like structures: "
            "input-dependent branches to constant outputs, hidden comparisons against magic values.",
            rationale=(
                "A backdoor in the graph survives format conversion and needs no code execution: the model "
                "behaves normally until a trigger input appears."
            ),
            category="code-execution",
            kind="scanner",
            default_severity=Severity.HIGH,
            settings_model=FindingSettings,
        ),
        RuleSpec(
            id=RuleId.LICENSE,
            title="License declared and approved",
            checks="The artifact declares a license, and it is in the group's approved_licenses when that "
            "list is set (SPDX ids, case-insensitive; 'a OR b' passes if either is approved).",
            rationale=(
                "Shipping a model whose license is unknown or forbids commercial use is a legal risk; the "
                "check must happen before the model reaches production, not after."
            ),
            category="compliance",
            kind="policy",
            default_severity=Severity.MEDIUM,
            settings_model=LicenseSettings,
            metadata={
                "s3": "object metadata x-amz-meta-license, or a license in GGUF/safetensors metadata",
                "huggingface": "model card (README.md next to the artifact) front matter `license:`, "
                "x-amz-meta-license, or GGUF/safetensors metadata",
                "local": "--metadata license=..., a README.md front matter next to the file, "
                "or GGUF/safetensors metadata",
            },
            default_enabled=False,
            default_blocking=False,
        ),
        RuleSpec(
            id=RuleId.FORMAT_SAFE,
            title="Safe serialization format",
            checks="Every format found in the artifact (containers included) is in approved_formats when "
            "set, and no pickle-based format is present when pickle_based is deny.",
            rationale=(
                "Scanning reduces the risk of pickle; refusing pickle removes it. Production groups accept "
                "only formats that carry tensors, not code (safetensors, ONNX, GGUF, Keras v3, NumPy)."
            ),
            category="code-execution",
            kind="policy",
            default_severity=Severity.HIGH,
            settings_model=FormatSettings,
            metadata={t: "none (formats detected from the bytes)" for t in SOURCE_TYPES},
            default_enabled=False,
            default_blocking=False,
        ),
        RuleSpec(
            id=RuleId.AUTHOR_VERIFIED,
            title="Author verified",
            checks="A detached OpenSSF model signature verifies against a trusted public key, or the "
            "artifact comes from an approved Hugging Face organisation or an approved S3 uploader.",
            rationale=(
                "Scanning says what a file does, not who made it. A signature proves the bytes are the ones "
                "a trusted publisher released; an invalid signature means tampering and always fails. "
                "Organisation and uploader checks are weaker: they trust whoever can write that prefix."
            ),
            category="provenance",
            kind="policy",
            default_severity=Severity.HIGH,
            settings_model=AuthorSettings,
            metadata={
                "s3": "<key>.sig or model.sig in the same prefix (signature); the uploader's IAM principal "
                "from the S3 event",
                "huggingface": "<key>.sig or model.sig (signature); the repo id from x-amz-meta-hf-repo "
                "or the key layout huggingface/<org>/<name>/",
                "local": "<file>.sig or model.sig next to the file, or --metadata signature=PATH",
            },
            default_enabled=False,
            default_blocking=False,
        ),
        RuleSpec(
            id=RuleId.SIZE_LIMIT,
            title="Size limit",
            checks="The artifact is no larger than the group's max_bytes.",
            rationale=(
                "Oversized artifacts exhaust scanner time and storage and are a cheap denial of service; a "
                "group states what it expects."
            ),
            category="resources",
            kind="policy",
            default_severity=Severity.LOW,
            settings_model=SizeSettings,
            metadata={t: "none (object size)" for t in SOURCE_TYPES},
            default_enabled=False,
            default_blocking=False,
        ),
        RuleSpec(
            id=RuleId.HASH_PIN,
            title="Hash pinned",
            checks="The sha256 is not in denied_sha256, and for keys matching a `pinned` pattern it is one "
            "of the pinned digests.",
            rationale=(
                "Known-bad artifacts are stopped by digest whatever their name; pinning stops a silent "
                "replacement of a model that is meant never to change."
            ),
            category="integrity",
            kind="policy",
            default_severity=Severity.HIGH,
            settings_model=HashPinSettings,
            metadata={t: "none (sha256 of the bytes; the object key for pins)" for t in SOURCE_TYPES},
            default_enabled=False,
            default_blocking=False,
        ),
    )
}

MANDATORY_RULES = frozenset(r for r, spec in CATALOG.items() if spec.mandatory)
SCANNER_RULES = tuple(r for r, spec in CATALOG.items() if spec.kind == "scanner")


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
