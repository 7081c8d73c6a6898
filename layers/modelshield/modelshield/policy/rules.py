"""Every rule: its spec (what it checks, why, defaults, settings) and its evaluation, registered together.

Scanner rules share one evaluation (the scanners' findings of that id, above the group's threshold);
each policy rule is one function of the group's setting, the scan report and the artifact's metadata.
The order here is the order rules are evaluated and listed (`explain`, SARIF, docs/rules.md). Defaults
are the built-in content-safety policy: scanner rules on and blocking, policy rules off (they need
settings a security engineer chooses: approved licenses, trusted keys). `MS-SCAN-INCOMPLETE` and
`MS-MALFORMED` are mandatory: a group cannot disable them or make them non-blocking, because both mean
"we could not show these bytes are safe". How to add one: CONTRIBUTING.md, "Adding a rule".
"""

from __future__ import annotations

import fnmatch
import re

from modelshield.models import PICKLE_BASED_FORMATS, RuleId, ScanReport, Severity
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.policy.rule_registry import (
    SOURCE_TYPES,
    Outcome,
    RuleSetting,
    RuleSpec,
    errored,
    failed,
    passed,
    rule,
)
from modelshield.policy.settings import (
    AuthorSettings,
    FindingSettings,
    FormatSettings,
    HashPinSettings,
    LicenseSettings,
    SizeSettings,
)
from modelshield.policy.signing import verify_signature


# -- scanner rules: raised by the format scanners, counted here ------------------------------------------
@rule(
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
        id=RuleId.DATA_REFERENCE,
        title="Unreviewed data reference",
        checks="A pickle names something of a trusted ML library that can only build data but that "
        "nobody vouched for by name: a library function referenced as a value and never called while "
        "loading, or a class-shaped name the generated catalogue (another library version) lacks.",
        rationale=(
            "Blocking these would block ordinary scikit-learn and PyTorch files (score functions, "
            "activations); allowing them silently would hide what a file refers to. A warning keeps "
            "both the upload and the record; make it blocking where only reviewed names may pass."
        ),
        category="code-execution",
        kind="scanner",
        default_severity=Severity.LOW,
        settings_model=FindingSettings,
        default_blocking=False,
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
)
def scanner_findings(setting: RuleSetting[FindingSettings], report: ScanReport, **_: object) -> Outcome:
    mine = [f for f in report.findings if f.rule == setting.rule]
    counted = [f for f in mine if f.severity >= setting.settings.min_severity]
    if not counted:
        below = len(mine) - len(counted)
        return passed(
            f"{below} finding(s) below {setting.settings.min_severity.name.lower()}" if below else ""
        )
    first = counted[0]
    more = f" (+{len(counted) - 1} more)" if len(counted) > 1 else ""
    return failed(f"{first.message}{more}", findings=counted, severity=max(f.severity for f in counted))


# -- policy rules: evaluated from the report and the artifact's metadata -------------------------------
@rule(
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
    )
)
def license_rule(
    setting: RuleSetting[LicenseSettings], report: ScanReport, metadata: ArtifactMetadata, **_: object
) -> Outcome:
    declared, where = _declared_license(report, metadata)
    if not declared:
        return failed("no license declared (set license metadata, a model card license:, or embed one)")
    approved = setting.settings.approved_licenses
    if approved is None:
        return passed(f"license {declared!r} (from {where})")
    if license_approved(declared, approved):
        return passed(f"license {declared!r} (from {where}) is approved")
    return failed(f"license {declared!r} (from {where}) is not approved (approved: {', '.join(approved)})")


def _declared_license(report: ScanReport, metadata: ArtifactMetadata) -> tuple[str | None, str]:
    if metadata.license:
        return metadata.license, "metadata"
    if metadata.user_metadata.get("license"):
        return metadata.user_metadata["license"], "object metadata"
    embedded = report.metadata.get("license")
    if isinstance(embedded, str) and embedded.strip():
        return embedded.strip(), f"{report.format.value} metadata"
    return None, ""


def license_approved(expression: str, approved: list[str]) -> bool:
    """SPDX-ish: 'a OR b' needs one approved, 'a AND b' needs both; parentheses are ignored."""
    allowed = {a.lower() for a in approved}
    cleaned = expression.replace("(", " ").replace(")", " ")
    for alternative in re.split(r"\s+or\s+", cleaned.strip(), flags=re.IGNORECASE):
        parts = [p.strip().lower() for p in re.split(r"\s+and\s+", alternative, flags=re.IGNORECASE)]
        if parts and all(p in allowed for p in parts):
            return True
    return False


@rule(
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
    )
)
def format_rule(setting: RuleSetting[FormatSettings], report: ScanReport, **_: object) -> Outcome:
    formats = _formats_seen(report)
    problems = []
    if setting.settings.pickle_based == "deny":
        pickled = [f for f in formats if f in {p.value for p in PICKLE_BASED_FORMATS}]
        if pickled:
            problems.append(f"pickle-based format {', '.join(pickled)} is denied")
    approved = setting.settings.approved_formats
    if approved is not None:
        ok = {f.value for f in approved} | {f.value for f in setting.settings.inert_formats}
        outside = [f for f in formats if f not in ok]
        if outside:
            listed = ", ".join(f.value for f in approved)
            problems.append(f"format {', '.join(outside)} is not approved (approved: {listed})")
    if problems:
        return failed("; ".join(problems))
    return passed(f"format {', '.join(formats)}")


def _formats_seen(report: ScanReport) -> list[str]:
    seen = report.metadata.get("formats")
    formats = [str(f) for f in seen] if isinstance(seen, list) and seen else [report.format.value]
    return list(dict.fromkeys(formats))


@rule(
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
    )
)
def author_rule(
    setting: RuleSetting[AuthorSettings], report: ScanReport, metadata: ArtifactMetadata, **_: object
) -> Outcome:
    settings = setting.settings
    if metadata.signature_path and settings.trusted_public_keys:
        if not metadata.artifact_path:
            return errored("a signature was found but the artifact is not available locally to verify it")
        check = verify_signature(
            metadata.artifact_path,
            metadata.signature_path,
            settings.trusted_public_keys,
            sha256=report.sha256,
            member=metadata.signature_member,
        )
        if not check.available:
            return errored(check.message)
        if check.valid:
            return passed(check.message)
        return failed(check.message)  # a bad signature fails whatever else would have vouched
    if metadata.source_type == "huggingface" and settings.approved_orgs:
        org = metadata.hf_org
        if org and org.lower() in {o.lower() for o in settings.approved_orgs}:
            return passed(f"Hugging Face organisation {org!r} is approved")
    if metadata.source_type == "s3" and settings.approved_principals:
        principal = metadata.uploader_principal
        if principal and any(fnmatch.fnmatchcase(principal, p) for p in settings.approved_principals):
            return passed(f"uploader {principal} is approved")
    return failed(_author_failure(settings, metadata))


def _author_failure(settings: AuthorSettings, metadata: ArtifactMetadata) -> str:
    reasons = []
    keys = settings.trusted_public_keys
    if keys:
        reasons.append("no signature found (<artifact>.sig or model.sig)")
    if metadata.source_type == "huggingface" and settings.approved_orgs:
        reasons.append(f"organisation {metadata.hf_org or '(unknown repo)'} is not approved")
    if metadata.source_type == "s3" and settings.approved_principals:
        reasons.append(f"uploader {metadata.uploader_principal or '(unknown)'} is not approved")
    if not reasons:
        reasons.append(
            f"nothing can verify a {metadata.source_type} artifact's author: configure trusted_public_keys"
            + (", approved_orgs" if metadata.source_type == "huggingface" else "")
            + (", approved_principals" if metadata.source_type == "s3" else "")
        )
    return "author not verified: " + "; ".join(reasons)


@rule(
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
    )
)
def size_rule(setting: RuleSetting[SizeSettings], report: ScanReport, **_: object) -> Outcome:
    limit = setting.settings.max_bytes
    if report.size <= limit:
        return passed(f"{report.size} bytes (limit {limit})")
    return failed(f"{report.size} bytes is over the group's limit of {limit}")


@rule(
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
    )
)
def hash_rule(
    setting: RuleSetting[HashPinSettings], report: ScanReport, artifact_key: str | None = None, **_: object
) -> Outcome:
    settings = setting.settings
    if not settings.denied_sha256 and not settings.pinned:
        return passed("no digests denied or pinned")
    if not report.sha256:
        return errored("the artifact has no sha256 to check")
    digest = report.sha256.lower()
    if digest in settings.denied_sha256:
        return failed(f"sha256 {digest} is denied")
    key = artifact_key if artifact_key is not None else report.path
    patterns = [p for p in settings.pinned if fnmatch.fnmatchcase(key, p)]
    if not patterns:
        return passed("not denied; no pin covers this key")
    allowed = {d for p in patterns for d in settings.pinned[p]}
    if digest in allowed:
        return passed(f"sha256 matches the pin for {', '.join(patterns)}")
    return failed(f"sha256 {digest} is not pinned for {key} (pins: {', '.join(patterns)})")
