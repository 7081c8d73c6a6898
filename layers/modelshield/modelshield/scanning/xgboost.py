"""XGBoost native models (`Booster.save_model` to .ubj or .json), parsed as their own structure.

An XGBoost model file holds trees and parameters; loading it runs no code (objectives and metrics are
names of built-in C++ implementations). What a scanner owes such a file is to understand every byte, so
that an upload that claims to be a model is one, and a format detection that says "XGBoost" means it:

- UBJSON (the default since 2.1; Universal Binary JSON, big-endian): walked iteratively with an explicit
  stack, never materialised; typed arrays (`[$d#<count>`, the bulk of a model) are skipped by seeking.
  Every marker, length and count is checked against the bytes that remain; nesting deeper than
  MAX_DEPTH, a count that runs past the end, an unknown marker and bytes after the top-level object are
  MS-MALFORMED. The top-level object must hold `learner` (and normally `version`).
- JSON: the same check through the text scanner (UTF-8 throughout), then `json.loads` up to
  Limits.max_metadata_bytes for the shape (larger files are validated as text only, and say so).

Memory is a few KB of stack plus one read buffer; see UBJSON's spec at ubjson.org (draft 12), the subset
XGBoost writes (src/common/json.cc: `{`, `[`, `$`, `#`, L/l/I/i/U, d/D, S, T/F, Z).
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO, Final

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size
from modelshield.scanning.text import scan_text

MAX_DEPTH: Final = 64  # XGBoost models nest ~8 levels; far deeper is an attack on recursive readers
MAX_KEY: Final = 4096  # object keys are parameter names
# Fixed-size scalar markers -> (struct format, size)
_SCALARS: Final[dict[int, tuple[str, int]]] = {
    ord("i"): (">b", 1),
    ord("U"): (">B", 1),
    ord("I"): (">h", 2),
    ord("l"): (">i", 4),
    ord("L"): (">q", 8),
    ord("d"): (">f", 4),
    ord("D"): (">d", 8),
    ord("C"): (">B", 1),
}
_INT_MARKERS: Final = frozenset(ord(c) for c in "iUIlL")
_NO_PAYLOAD: Final = frozenset(ord(c) for c in "TFZ")
READ: Final = 1 << 16


class _Malformed(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _Reader:
    """Buffered big-endian reads with the absolute offset, for error messages and skips."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.size = stream, size
        self.buf = b""
        self.pos = 0  # in buf
        self.base = 0  # absolute offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            if self.offset + n > self.size:
                raise _Malformed(f"truncated: {n} byte(s) needed at offset {self.offset}", self.offset)
            self.stream.seek(self.offset)
            self.base = self.offset
            self.buf = self.stream.read(max(n, READ))
            self.pos = 0
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if self.offset + n > self.size:
            raise _Malformed(f"a typed array of {n} bytes runs past the end of the file", self.offset)
        if self.pos + n <= len(self.buf):
            self.pos += n
        else:
            self.base, self.buf, self.pos = self.offset + n, b"", 0

    def marker(self) -> int:
        while True:
            m = self.take(1)[0]
            if m != ord("N"):  # no-op padding
                return m

    def integer(self, marker: int | None = None) -> int:
        m = self.marker() if marker is None else marker
        if m not in _INT_MARKERS:
            raise _Malformed(f"expected an integer marker, got {chr(m)!r}", self.offset - 1)
        fmt, n = _SCALARS[m]
        return struct.unpack(fmt, self.take(n))[0]


def _value(r: _Reader, m: int, ctx: ScanContext) -> None:
    """Consume one non-container value after its marker."""
    if m in _SCALARS:
        r.take(_SCALARS[m][1])
        return
    if m in _NO_PAYLOAD:
        return
    if m in (ord("S"), ord("H")):
        n = r.integer()
        if n < 0:
            raise _Malformed(f"negative string length {n}", r.offset)
        if n > ctx.limits.max_metadata_bytes:
            raise _Malformed(f"string of {n} bytes over the metadata limit", r.offset)
        r.skip(n) if n > READ else r.take(n)
        return
    raise _Malformed(f"unknown UBJSON marker {chr(m)!r} (0x{m:02x})", r.offset - 1)


def walk_ubjson(stream: BinaryIO, ctx: ScanContext) -> dict[str, Any]:
    """Validate the whole document; return what is cheap to know (top-level keys, version)."""
    size = stream_size(stream)
    r = _Reader(stream, size)
    if r.marker() != ord("{"):
        raise _Malformed("an XGBoost UBJSON model is an object ('{')", 0)
    # stack entries: [kind '{' or '[', remaining count or -1 for open-ended, typed marker or None]
    stack: list[list[Any]] = [["{", -1, None]]
    top_keys: list[str] = []
    version: list[int] = []
    in_version = False
    while stack:
        ctx.tick()
        kind, remaining, typed = stack[-1]
        if remaining == 0:
            stack.pop()
            continue
        if kind == "{":
            if remaining < 0:
                m = r.marker()
                if m == ord("}"):
                    stack.pop()
                    continue
                n = r.integer(m)
            else:
                n = r.integer()
            if not 0 <= n <= MAX_KEY:
                raise _Malformed(f"object key length {n} out of range", r.offset)
            key = r.take(n).decode("utf-8", "replace")
            if len(stack) == 1 and len(top_keys) < 32:
                top_keys.append(key)
            in_version = len(stack) == 1 and key == "version"
            m = typed if typed is not None else r.marker()
        else:
            if remaining < 0:
                m = r.marker()
                if m == ord("]"):
                    stack.pop()
                    continue
            else:
                m = typed if typed is not None else r.marker()
        if remaining > 0:
            stack[-1][1] -= 1
        if m in (ord("{"), ord("[")):
            if len(stack) >= MAX_DEPTH:
                raise _Malformed(f"nested deeper than {MAX_DEPTH} containers", r.offset)
            child_typed: int | None = None
            count = -1
            peek = r.marker()
            if peek == ord("$"):
                child_typed = r.take(1)[0]
                if r.marker() != ord("#"):
                    raise _Malformed("a typed container ('$') must give its count ('#')", r.offset)
                count = r.integer()
            elif peek == ord("#"):
                count = r.integer()
            else:
                r.pos -= 1  # not a header: the first element's marker, read again below
            if count < -1 or count > size:
                raise _Malformed(f"container count {count} is impossible for a {size}-byte file", r.offset)
            if child_typed is not None and m == ord("[") and child_typed in _SCALARS:
                r.skip(count * _SCALARS[child_typed][1])  # the bulk of a model: never read
                continue
            stack.append([chr(m), count, child_typed])
            continue
        if in_version and kind == "[" and len(stack) == 2 and m in _INT_MARKERS:
            number = r.integer(m)
            if len(version) < 4:
                version.append(number)
            continue
        _value(r, m, ctx)
    if r.offset != size:
        raise _Malformed(f"{size - r.offset} byte(s) after the model object", r.offset)
    if "learner" not in top_keys:
        raise _Malformed("no 'learner' object: not an XGBoost model", 0)
    return {"keys": top_keys, "version": version}


def _sniff_ubj(head: bytes, stream: BinaryIO) -> bool:
    return head.startswith((b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner", b"{i\x07learner", b"{U\x07learner"))


def _sniff_json(head: bytes, stream: BinaryIO) -> bool:
    return head.lstrip()[:12] == b'{"learner":{'


@register(Format.XGBOOST, sniff=_sniff_ubj, priority=80)
def scan_xgboost_ubj(stream: BinaryIO, ctx: ScanContext) -> None:
    """A UBJSON XGBoost model, byte by byte."""
    try:
        facts = walk_ubjson(stream, ctx)
    except _Malformed as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"XGBoost UBJSON model: {exc}", offset=exc.offset)
        return
    ctx.set_metadata("xgboost", {"encoding": "ubjson", **facts})


@register(Format.XGBOOST, sniff=_sniff_json, priority=75)
def scan_xgboost_json(stream: BinaryIO, ctx: ScanContext) -> None:
    """A JSON XGBoost model: valid text throughout, then its shape when small enough to parse."""
    before = len(ctx.shared.findings)
    scan_text(stream, ctx)
    if len(ctx.shared.findings) > before:
        return
    size = stream_size(stream)
    if size > ctx.limits.max_metadata_bytes:
        ctx.set_metadata("xgboost", {"encoding": "json", "structure": "validated as text only (large)"})
        return
    stream.seek(0)
    try:
        doc = json.loads(stream.read())
    except ValueError as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"XGBoost JSON model does not parse: {exc}")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("learner"), dict):
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "XGBoost JSON model has no 'learner' object")
        return
    ctx.set_metadata("xgboost", {"encoding": "json", "keys": list(doc)[:32], "version": doc.get("version")})
