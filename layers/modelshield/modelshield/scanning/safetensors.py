"""safetensors scanner: the JSON header checked the way the reference loader checks it, data never read.

safetensors cannot run code, which is why groups approve it; what remains is a parser attack surface and
"polyglot" tricks, so we check what the Rust loader enforces and a little more:
- header length (u64 LE) within the file and within Limits.max_metadata_bytes (the loader allocates it);
- the header is UTF-8 JSON, an object, no duplicate keys (two parsers may pick different values);
- `__metadata__` maps strings to strings;
- each tensor has a known dtype, a shape of non-negative ints and data_offsets [begin, end] whose length
  equals prod(shape) * dtype bits / 8;
- offsets sorted, non-overlapping and covering the data region exactly: no gaps and no trailing bytes
  (bytes nobody accounts for can hide a second payload that another tool reads).
Everything is MS-MALFORMED (HIGH when a loader would reject or misread it). Memory: the header only, so a
2 GiB file is scanned in a few MB (see benchmarks/format_bench.py).
"""

from __future__ import annotations

import codecs
import json
import re
import struct
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size

# Bits per element of every dtype the reference implementation knows (sub-byte types pack).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
LICENSE_KEYS = ("license", "License", "LICENSE")


def sniff_safetensors(head: bytes, stream: BinaryIO) -> bool:
    """u64 header length, then a JSON object: '{' right after it (the spec requires it), and either '}'
    where the length says it ends or JSON-looking text. A binary file (a pickle, say) can have '{' at byte
    8 by chance; broken headers (absurd lengths, bad JSON) we still claim, to report them."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or head[8:9] != b"{" or head[9:10] not in b'"} \t\r\n':
        return False
    if 8 + n <= stream_size(stream):  # the header fits: it closes where its length says, or looks JSON
        stream.seek(8 + max(n - 64, 0))
        if stream.read(min(n, 64)).rstrip(b" \t\r\n").endswith(b"}"):
            return True
    text = head[8 : 8 + n]
    if _CONTROL_BYTES.search(text):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(text, final=False)
    except UnicodeDecodeError:
        return False
    return True


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


@register(Format.SAFETENSORS, sniff=sniff_safetensors, priority=70)
def scan_safetensors(stream: BinaryIO, ctx: ScanContext) -> None:
    """Validate the header against the file; never touch tensor bytes."""
    size = stream_size(stream)
    (n,) = struct.unpack("<Q", stream.read(8))
    if n > ctx.limits.max_metadata_bytes:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"safetensors header declares {n} bytes, over the {ctx.limits.max_metadata_bytes}-byte limit "
            "(a loader would allocate it)",
            offset=0,
            header_bytes=n,
        )
        ctx.incomplete("safetensors header not read (over the metadata limit)")
        return
    if 8 + n > size:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"safetensors header declares {n} bytes but the file has only {size - 8} after the length",
            offset=0,
            header_bytes=n,
        )
        return
    raw = stream.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"safetensors header repeats the key {exc}", offset=8)
        return
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        ctx.add(
            RuleId.MALFORMED, Severity.HIGH, f"safetensors header is not valid UTF-8 JSON: {exc}", offset=8
        )
        return
    if not isinstance(header, dict):
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "safetensors header is not a JSON object", offset=8)
        return
    check_header(header, data_size=size - 8 - n, ctx=ctx)


def check_header(header: dict[str, Any], *, data_size: int, ctx: ScanContext) -> None:
    """Every tensor entry and the data layout; see the module docstring for the rules."""
    metadata = header.get("__metadata__")
    if metadata is not None:
        _check_metadata(metadata, ctx)
    spans: list[tuple[int, int, str]] = []
    for index, (name, info) in enumerate(header.items()):
        if index & 0x3FF == 0:
            ctx.check()
        if name == "__metadata__":
            continue
        span = _check_tensor(name, info, ctx)
        if span is not None:
            spans.append((span[0], span[1], name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"tensor {name!r} overlaps the previous tensor's bytes",
                offset=8,
            )
        elif begin > cursor:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"{begin - cursor} unaccounted bytes before tensor {name!r} (offsets must be contiguous)",
                offset=8,
            )
        cursor = max(cursor, end)
    if cursor > data_size:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"tensor data runs to byte {cursor} of the data section, but it has only {data_size}",
            offset=8,
        )
    elif cursor < data_size:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"{data_size - cursor} trailing bytes after the last tensor (not covered by any tensor)",
            offset=8,
        )
    ctx.set_metadata("safetensors", {"tensors": len(spans), "data_bytes": data_size})


def _check_metadata(metadata: Any, ctx: ScanContext) -> None:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        ctx.add(
            RuleId.MALFORMED, Severity.HIGH, "safetensors __metadata__ must map strings to strings", offset=8
        )
        return
    for key in LICENSE_KEYS:
        value = metadata.get(key)
        if value and value.strip():
            ctx.set_metadata("license", value.strip())
            break


def _check_tensor(name: str, info: Any, ctx: ScanContext) -> tuple[int, int] | None:
    """(begin, end) of a well-formed entry, else None after reporting what is wrong."""

    def bad(message: str, severity: Severity = Severity.HIGH) -> None:
        ctx.add(RuleId.MALFORMED, severity, f"tensor {name!r}: {message}", offset=8, tensor=name)

    if not isinstance(info, dict):
        bad("entry is not an object")
        return None
    extra = set(info) - TENSOR_KEYS
    if extra:
        bad(f"unexpected keys {sorted(extra)}", Severity.MEDIUM)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        bad(f"unknown dtype {dtype!r}")
        return None
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        bad("shape must be a list of non-negative integers")
        return None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_uint(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        bad("data_offsets must be [begin, end] with 0 <= begin <= end")
        return None
    elements = 1
    for d in shape:
        elements *= d
    bits = elements * DTYPE_BITS[dtype]
    length = offsets[1] - offsets[0]
    if bits % 8:
        bad(f"{elements} elements of {dtype} do not fill whole bytes")
    elif bits // 8 != length:
        bad(f"shape {shape} of {dtype} needs {bits // 8} bytes but data_offsets span {length}")
    return offsets[0], offsets[1]


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
