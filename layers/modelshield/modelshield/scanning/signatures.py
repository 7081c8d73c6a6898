"""Detached signatures uploaded next to a model (`model.safetensors.sig`, `model.sig`, sigstore bundles).

A signature is evidence about a model, not a model: nothing loads it as one, and the README tells teams to
upload it beside the model it signs (MS-AUTHOR-VERIFIED reads it there). So it must not be scanned as a
model, and its own evaluation must not fail the provenance rules (a signature has no signature). What the
scanner still owes it is the fail-closed part: the *whole* file has to be one of the signature shapes,
otherwise "signature" would be a label any payload could wear. Recognised, by content only:

- a sigstore bundle (what OpenSSF model signing writes to `model.sig`): one JSON object whose
  `mediaType` is `application/vnd.dev.sigstore.bundle...`, with `verificationMaterial` and one of
  `dsseEnvelope` / `messageSignature`, and no keys a bundle does not have;
- an ASCII-armoured OpenPGP or SSH signature (`-----BEGIN PGP SIGNATURE-----` / `SSH SIGNATURE`): the
  armour lines and base64 in between, nothing else;
- a binary OpenPGP detached signature: a sequence of signature packets (tag 2) whose lengths add up to
  the file exactly.
The bundle's contents are not verified here (that needs the model and a trusted key: policy/signing.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, BinaryIO, Final

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size

MAX_SIGNATURE_BYTES: Final = 4 << 20  # real bundles are a few KB (a certificate chain and a tlog entry)
BUNDLE_MEDIA: Final = "application/vnd.dev.sigstore.bundle"
BUNDLE_KEYS: Final = frozenset({"mediaType", "verificationMaterial", "dsseEnvelope", "messageSignature"})
_ARMOUR: Final = re.compile(
    rb"-----BEGIN (PGP SIGNATURE|SSH SIGNATURE)-----\r?\n((?:[A-Za-z][A-Za-z-]*: [^\r\n]*\r?\n)*\r?\n?)?"
    rb"([A-Za-z0-9+/=\r\n]+?)(=[A-Za-z0-9+/]{4}\r?\n)?-----END \1-----\r?\n?"
)


def _sniff(head: bytes, stream: BinaryIO) -> bool:
    text = head.lstrip()
    if text.startswith(b"{") and b'"mediaType"' in head and BUNDLE_MEDIA.encode() in head:
        return True
    if text.startswith((b"-----BEGIN PGP SIGNATURE-----", b"-----BEGIN SSH SIGNATURE-----")):
        return True
    return _openpgp_packets(head, partial=True) is not None


def _openpgp_packets(data: bytes, *, partial: bool = False) -> int | None:
    """Number of signature packets if `data` is a sequence of them (a prefix of one when partial)."""
    pos, count = 0, 0
    while pos < len(data):
        tag_byte = data[pos]
        if not tag_byte & 0x80:
            return None
        if tag_byte & 0x40:  # new format: tag in the low 6 bits
            tag = tag_byte & 0x3F
            if pos + 1 >= len(data):
                return count if partial and count == 0 and tag == 2 else None
            first = data[pos + 1]
            if first < 192:
                length, header = first, 2
            elif first < 224:
                if pos + 2 >= len(data):
                    return None
                length, header = ((first - 192) << 8) + data[pos + 2] + 192, 3
            elif first == 255:
                if pos + 6 > len(data):
                    return None
                length, header = int.from_bytes(data[pos + 2 : pos + 6], "big"), 6
            else:
                return None  # partial body lengths are not used by signatures
        else:  # old format: tag in bits 5-2, length type in bits 1-0
            tag, ltype = (tag_byte >> 2) & 0x0F, tag_byte & 0x03
            size = {0: 1, 1: 2, 2: 4}.get(ltype)
            if size is None or pos + 1 + size > len(data):
                return None
            length, header = int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), 1 + size
        if tag != 2 or pos + header >= len(data) + (1 if partial else 0):
            return None
        version = data[pos + header] if pos + header < len(data) else 4
        if version not in (3, 4, 5, 6):
            return None
        pos += header + length
        count += 1
        if partial and pos >= len(data):
            return count
    return count if pos == len(data) and count else None


def _bundle_problem(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "not a JSON object"
    media = doc.get("mediaType")
    if not isinstance(media, str) or not media.startswith(BUNDLE_MEDIA):
        return f"mediaType {media!r} is not a sigstore bundle"
    extra = set(doc) - BUNDLE_KEYS
    if extra:
        return f"keys a sigstore bundle does not have: {', '.join(sorted(extra))}"
    if not isinstance(doc.get("verificationMaterial"), dict):
        return "no verificationMaterial object"
    content = [k for k in ("dsseEnvelope", "messageSignature") if k in doc]
    if len(content) != 1 or not isinstance(doc[content[0]], dict):
        return "needs exactly one of dsseEnvelope / messageSignature (an object)"
    return ""


@register(Format.SIGNATURE, sniff=_sniff, priority=85)
def scan_signature(stream: BinaryIO, ctx: ScanContext) -> None:
    """The whole file is one signature shape; then it is evidence, not a model (see module doc)."""
    size = stream_size(stream)
    if size > MAX_SIGNATURE_BYTES:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"a {size}-byte signature: real ones are a few KB")
        return
    stream.seek(0)
    data = stream.read()
    kind: str
    if data.lstrip().startswith(b"{"):
        try:
            doc = json.loads(data)
        except ValueError as exc:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, f"sigstore bundle is not valid JSON: {exc}")
            return
        problem = _bundle_problem(doc)
        if problem:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, f"not a sigstore bundle: {problem}")
            return
        kind = "sigstore bundle"
    elif data.startswith(b"-----BEGIN"):
        match = _ARMOUR.fullmatch(data.strip() + b"\n")
        try:
            ok = match is not None and bool(
                base64.b64decode(re.sub(rb"\s", b"", match.group(3)), validate=True)
            )
        except (binascii.Error, ValueError):
            ok = False
        if not ok or match is None:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, "armoured signature with content outside its armour")
            return
        kind = match.group(1).decode().lower()
    else:
        if _openpgp_packets(data) is None:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, "OpenPGP data that is not only signature packets")
            return
        kind = "openpgp signature"
    ctx.set_metadata("signature", {"kind": kind, "size": size})
