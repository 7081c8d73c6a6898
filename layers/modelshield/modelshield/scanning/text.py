"""Text scanner: JSON, YAML, Markdown, plain text. Inert data: nothing here runs when a model loads.

It still earns its place: (1) fail closed, it confirms the *whole* file is UTF-8 text without binary
control bytes, so a text header cannot smuggle a binary payload past the sniffer; (2) model cards
(`README.md` YAML front matter) and JSON configs declare a `license`, which the license rule needs;
(3) Hugging Face `tokenizer_config.json` and `*.jinja` files carry chat templates, analysed like GGUF ones.
A protocol-0 pickle is also ASCII, which is why the pickle sniffer (priority 30) runs before this one (10).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, BinaryIO

import yaml

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.jinja import analyse_template
from modelshield.scanning.keras import judge_config
from modelshield.scanning.registry import MiB, ScanContext, register

READ_CHUNK = 1 * MiB
FRONT_MATTER_MAX = 256 * 1024


# C0 control bytes other than tab, newlines, form feed and escape: binary, not text.
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def sniff_text(head: bytes, stream: BinaryIO) -> bool:
    """UTF-8 (a multi-byte character may be cut at the end of the head) without binary control bytes."""
    if _BINARY_BYTES.search(head):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


@register(Format.TEXT, sniff=sniff_text, priority=10)
def scan_text(stream: BinaryIO, ctx: ScanContext) -> None:
    """Validate the whole file as text; read license and chat templates from small structured files."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    keep: list[str] = []
    kept = 0
    offset = 0
    wanted = False
    limit = ctx.limits.max_metadata_bytes
    while True:
        ctx.check()
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        binary = _BINARY_BYTES.search(chunk)
        nul = binary.start() if binary else -1
        try:
            text = decoder.decode(chunk if nul < 0 else chunk[:nul], final=False)
        except UnicodeDecodeError as exc:
            _binary_tail(ctx, offset + exc.start)
            return
        if nul >= 0:
            _binary_tail(ctx, offset + nul)
            return
        if offset == 0:
            wanted = _wants_structure(text, ctx)
            if looks_like_python(text, ctx.location):
                ctx.add(
                    RuleId.CODE_UNKNOWN,
                    Severity.HIGH,
                    "Python source shipped with the model: code a loader imports (trust_remote_code, "
                    "custom objects, torch.hub) runs with the loader's rights; review it before use",
                )
        if wanted and kept <= limit:
            keep.append(text)
            kept += len(chunk)
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        _binary_tail(ctx, offset)
        return
    if wanted and kept <= limit:
        _structured("".join(keep), ctx)


def _binary_tail(ctx: ScanContext, offset: int) -> None:
    ctx.incomplete(
        f"text file turns into binary data at byte {offset} (not UTF-8, or a control byte); the binary part "
        "was not scanned",
        offset=offset,
    )


def _wants_structure(head: str, ctx: ScanContext) -> bool:
    """Only JSON objects, front matter and template files are kept in memory for parsing."""
    stripped = head.lstrip("\ufeff \t\r\n")
    return stripped.startswith(("{", "---")) or ctx.location.lower().endswith((".jinja", ".jinja2", ".j2"))


def _structured(text: str, ctx: ScanContext) -> None:
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            _from_json(data, ctx)
    elif stripped.startswith("---"):
        _front_matter(stripped, ctx)
    if ctx.location.lower().endswith((".jinja", ".jinja2", ".j2")):
        _template(text, "template file", ctx)


def _from_json(data: dict[str, Any], ctx: ScanContext) -> None:
    if "class_name" in data and "config" in data:
        # A Keras config outside a recognisable .keras archive (e.g. metadata.json dropped, or a loose
        # config.json): Keras would still deserialize it, so judge it the same way.
        judge_config(data, ctx, member=None)
    template = data.get("chat_template")
    if isinstance(template, str):
        _template(template, "chat_template", ctx)
    elif isinstance(template, list):  # [{"name": ..., "template": ...}]
        for item in template:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                _template(item["template"], f"chat_template {item.get('name')!r}", ctx)
    _license(data.get("license"), ctx)
    _remote_code(data, ctx)


def _remote_code(data: dict[str, Any], ctx: ScanContext) -> None:
    """Hugging Face `auto_map` (config.json, tokenizer_config.json ...): with trust_remote_code=True,
    transformers imports the named module from the model repository and runs it. Custom code, by name."""
    auto_map = data.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        return
    targets: list[str] = []
    for value in auto_map.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item:
                targets.append(item)
    remote = [t for t in targets if "--" in t]  # "org/repo--module.Class": code from another repository
    ctx.add(
        RuleId.CODE_UNKNOWN,
        Severity.HIGH,
        f"auto_map names custom code ({', '.join(targets[:4]) or 'unnamed'}): transformers imports and runs "
        "it from the model repository when loaded with trust_remote_code=True"
        + (f"; {remote[0]!r} pulls it from another repository" if remote else ""),
        auto_map=targets[:20],
    )


# Python source: what trust_remote_code (and torch.hub, custom Keras objects) import from a repository.
_PYTHON_HINTS = re.compile(r"^\s*(import \w|from [\w.]+ import |def \w+\(|class \w+[(:])", re.MULTILINE)


def looks_like_python(text: str, location: str) -> bool:
    return location.lower().endswith((".py", ".pyw", ".pyi")) and bool(_PYTHON_HINTS.search(text))


def _front_matter(text: str, ctx: ScanContext) -> None:
    """YAML between the leading '---' lines of a model card (safe_load: plain data only)."""
    end = text.find("\n---", 3)
    if end == -1 or end > FRONT_MATTER_MAX:
        return
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return
    if isinstance(data, dict):
        _license(data.get("license"), ctx)


def _license(value: Any, ctx: ScanContext) -> None:
    if isinstance(value, str) and value.strip():
        ctx.set_metadata("license", value.strip())
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        ctx.set_metadata("license", ", ".join(v.strip() for v in value))


def _template(template: str, what: str, ctx: ScanContext) -> None:
    for issue in analyse_template(template):
        ctx.add(
            issue.rule,
            issue.severity if issue.rule is not RuleId.MALFORMED else Severity.MEDIUM,
            f"{what}: {issue.message}",
            template_offset=issue.offset,
            snippet=issue.snippet,
        )
