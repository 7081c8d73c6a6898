"""GGUF scanner (llama.cpp models): the header, every metadata key/value and tensor info, with bounds.

What a GGUF file can do to its loader:
- a chat template (`tokenizer.chat_template`, `tokenizer.chat_template.<name>`) is rendered with Jinja2 at
  chat time; a template that walks to Python internals runs code (CVE-2024-34359). -> MS-CODE-EXEC,
  analysed by `modelshield.scanning.jinja` (tokens, not grep);
- lengths and counts are attacker-controlled u64s that C loaders have trusted (heap overflows in
  gguf parsing); a declared length beyond the file or our limits, an unknown value type, a tensor whose
  bytes fall outside the file, duplicate keys or tensor names -> MS-MALFORMED.
Tensor data is never read: the data section is checked by arithmetic on the declared offsets and sizes.
Facts for policy rules: license, author and organization from `general.*` (ScanContext.set_metadata).
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.jinja import analyse_template
from modelshield.scanning.registry import MiB, ScanContext, register
from modelshield.scanning.streams import stream_size

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (1, 2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 64 * 1024  # llama.cpp allows 64 bytes; anything near this is hostile anyway
MAX_ARRAY_DEPTH = 2  # arrays of arrays: llama.cpp rejects them, gguf-py writes them
DEFAULT_ALIGNMENT = 32

# GGUF value types: (struct code, size) for fixed-width ones; 8 = string, 9 = array.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1),  # UINT8
    1: ("b", 1),  # INT8
    2: ("H", 2),  # UINT16
    3: ("h", 2),  # INT16
    4: ("I", 4),  # UINT32
    5: ("i", 4),  # INT32
    6: ("f", 4),  # FLOAT32
    7: ("?", 1),  # BOOL
    10: ("Q", 8),  # UINT64
    11: ("q", 8),  # INT64
    12: ("d", 8),  # FLOAT64
}
STRING, ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), from ggml's type traits.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
METADATA_KEYS = {
    "general.license": "license",
    "general.author": "author",
    "general.organization": "organization",
}


def sniff_gguf(head: bytes, stream: BinaryIO) -> bool:
    return head[:4] == MAGIC


class GGUFError(Exception):
    """The file breaks the format; `rule`/`severity` say how to report it."""

    def __init__(self, message: str, offset: int, severity: Severity = Severity.HIGH) -> None:
        super().__init__(message)
        self.offset = offset
        self.severity = severity


class _Cursor:
    """Sequential reads with a read-ahead buffer, a position, and the file size for bound checks."""

    def __init__(self, stream: BinaryIO, size: int, endian: str = "<") -> None:
        self.stream = stream
        self.size = size
        self.endian = endian
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def read(self, n: int) -> bytes:
        if n > self.remaining:
            raise GGUFError(f"needs {n} bytes but only {self.remaining} remain in the file", self.pos)
        rel = self.pos - self._buf_start
        if 0 <= rel and rel + n <= len(self._buf):
            data = self._buf[rel : rel + n]
        elif n >= MiB:
            self.stream.seek(self.pos)
            data = self.stream.read(n)
        else:
            self.stream.seek(self.pos)
            self._buf = self.stream.read(max(n, 256 * 1024))
            self._buf_start = self.pos
            data = self._buf[:n]
        if len(data) != n:
            raise GGUFError("file ended early", self.pos)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n > self.remaining:
            raise GGUFError(f"skips {n} bytes but only {self.remaining} remain in the file", self.pos)
        self.pos += n

    def unpack(self, code: str, size: int) -> Any:
        return struct.unpack(self.endian + code, self.read(size))[0]

    def u32(self) -> int:
        return int(self.unpack("I", 4))

    def u64(self) -> int:
        return int(self.unpack("Q", 8))


@dataclass
class _Header:
    version: int
    tensor_count: int
    kv_count: int
    wide: bool  # v2+: counts and lengths are u64 (v1: u32)


@register(Format.GGUF, sniff=sniff_gguf, priority=80)
def scan_gguf(stream: BinaryIO, ctx: ScanContext) -> None:
    """Parse the whole header section; report template code, malformations and limits."""
    size = stream_size(stream)
    parser = _Parser(_Cursor(stream, size), ctx)
    try:
        parser.parse()
    except GGUFError as exc:
        ctx.add(RuleId.MALFORMED, exc.severity, f"GGUF: {exc}", offset=exc.offset)
        if exc.severity >= Severity.HIGH:
            ctx.incomplete(
                "GGUF only partly scanned: parsing stopped at a malformed structure", offset=exc.offset
            )
    parser.publish()


class _Parser:
    def __init__(self, cur: _Cursor, ctx: ScanContext) -> None:
        self.cur = cur
        self.ctx = ctx
        self.meta_limit = ctx.limits.max_metadata_bytes
        self.facts: dict[str, Any] = {}
        self.alignment = DEFAULT_ALIGNMENT

    # -- header ----------------------------------------------------------------------------------
    def header(self) -> _Header:
        cur = self.cur
        if cur.read(4) != MAGIC:
            raise GGUFError("bad magic", 0)
        raw = cur.read(4)
        version = struct.unpack("<I", raw)[0]
        if version not in SUPPORTED_VERSIONS:
            swapped = struct.unpack(">I", raw)[0]
            if swapped in SUPPORTED_VERSIONS:
                cur.endian = ">"  # big-endian GGUF (s390x builds): same layout, other byte order
                version = swapped
            else:
                raise GGUFError(f"unsupported GGUF version {version}", 4)
        wide = version >= 2
        tensor_count = cur.u64() if wide else cur.u32()
        kv_count = cur.u64() if wide else cur.u32()
        # Each KV needs at least a key length, a type and one byte; each tensor info at least 4 fields.
        if kv_count * 13 > cur.remaining:
            raise GGUFError(f"declares {kv_count} metadata entries, more than the file can hold", 16)
        if tensor_count * 24 > cur.remaining:
            raise GGUFError(f"declares {tensor_count} tensors, more than the file can hold", 8)
        return _Header(version, tensor_count, kv_count, wide)

    def length(self, wide: bool) -> int:
        return self.cur.u64() if wide else self.cur.u32()

    def string(self, wide: bool, *, limit: int, what: str) -> tuple[str | None, int]:
        """Read a string up to `limit` bytes, or skip a longer one (returns None). Bounds-checked."""
        at = self.cur.pos
        n = self.length(wide)
        if n > self.cur.remaining:
            raise GGUFError(f"{what} declares {n} bytes, beyond the end of the file", at)
        if n > limit:
            self.cur.skip(n)
            return None, at
        raw = self.cur.read(n)
        try:
            return raw.decode("utf-8"), at
        except UnicodeDecodeError:
            self.ctx.add(RuleId.MALFORMED, Severity.MEDIUM, f"GGUF: {what} is not valid UTF-8", offset=at)
            return raw.decode("utf-8", errors="replace"), at

    def parse(self) -> None:
        hdr = self.header()
        self.facts.update(version=hdr.version, tensor_count=hdr.tensor_count, kv_count=hdr.kv_count)
        keys: set[str] = set()
        for _ in range(hdr.kv_count):
            self.ctx.tick()
            key, at = self.string(hdr.wide, limit=64 * 1024, what="metadata key")
            if key is None:
                raise GGUFError("metadata key longer than 64 KiB", at)
            if key in keys:
                raise GGUFError(f"duplicate metadata key {key!r} (loaders disagree on which wins)", at)
            keys.add(key)
            vtype = self.cur.u32()
            value_at = self.cur.pos
            wanted = key in METADATA_KEYS or key.startswith(CHAT_TEMPLATE_KEY) or key == "general.alignment"
            wanted = wanted or key in ("general.architecture", "general.name")
            value = self.value(vtype, hdr.wide, key=key, keep=wanted, depth=0)
            if wanted:
                self.use(key, vtype, value, value_at)
        self.tensors(hdr)

    def value(self, vtype: int, wide: bool, *, key: str, keep: bool, depth: int) -> Any:
        cur = self.cur
        if vtype in _SCALARS:
            code, width = _SCALARS[vtype]
            return cur.unpack(code, width) if keep else cur.skip(width)
        if vtype == STRING:
            limit = self.meta_limit if keep else 0
            text, at = self.string(wide, limit=limit, what=f"value of {key!r}")
            if text is None and keep:
                self.ctx.incomplete(
                    f"GGUF value of {key!r} is larger than the {self.meta_limit}-byte metadata limit; "
                    "not analysed",
                    offset=at,
                )
            return text
        if vtype == ARRAY:
            at = cur.pos
            etype = cur.u32()
            count = self.length(wide)
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFError(f"arrays nested deeper than {MAX_ARRAY_DEPTH} in {key!r}", at)
            min_size = _SCALARS[etype][1] if etype in _SCALARS else 4 if etype in (STRING, ARRAY) else 1
            if count * min_size > cur.remaining:
                raise GGUFError(f"array {key!r} declares {count} items, more than the file can hold", at)
            if etype in _SCALARS:
                cur.skip(count * _SCALARS[etype][1])  # numbers (token scores, types): nothing to judge
                return None
            items: list[Any] = []
            for _ in range(count):
                self.ctx.tick()
                item = self.value(etype, wide, key=key, keep=keep and len(items) < 64, depth=depth + 1)
                if keep and item is not None and len(items) < 64:
                    items.append(item)
            return items
        raise GGUFError(f"unknown value type {vtype} for {key!r}", cur.pos - 4)

    def use(self, key: str, vtype: int, value: Any, at: int) -> None:
        if key.startswith(CHAT_TEMPLATE_KEY):
            templates = value if isinstance(value, list) else [value]
            for template in templates:
                if isinstance(template, str):
                    self.check_template(key, template, at)
            return
        if key == "general.alignment":
            if not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise GGUFError(f"general.alignment {value!r} is not a positive power of two", at)
            self.alignment = value
            return
        if key in METADATA_KEYS and isinstance(value, str) and value.strip():
            self.ctx.set_metadata(METADATA_KEYS[key], value.strip())
        if isinstance(value, str):
            self.facts[key.split(".", 1)[1]] = value[:200]

    def check_template(self, key: str, template: str, at: int) -> None:
        self.facts.setdefault("chat_templates", []).append(key)
        for issue in analyse_template(template):
            self.ctx.add(
                issue.rule,
                issue.severity,
                f"chat template {key!r}: {issue.message}",
                offset=at,
                key=key,
                template_offset=issue.offset,
                snippet=issue.snippet,
            )

    # -- tensors ---------------------------------------------------------------------------------
    def tensors(self, hdr: _Header) -> None:
        cur = self.cur
        infos: list[tuple[str, int, int, int]] = []  # name, offset, nbytes, info offset
        names: set[str] = set()
        for _ in range(hdr.tensor_count):
            self.ctx.tick()
            name, at = self.string(hdr.wide, limit=MAX_TENSOR_NAME, what="tensor name")
            if name is None:
                raise GGUFError("tensor name longer than 64 KiB", at)
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r}", at)
            names.add(name)
            n_dims = cur.u32()
            if n_dims > MAX_DIMS:
                raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (ggml supports {MAX_DIMS})", at)
            dims = [self.length(hdr.wide) for _ in range(n_dims)]
            ggml_type = cur.u32()
            offset = cur.u64()
            nbytes = self.tensor_bytes(name, dims, ggml_type, at)
            infos.append((name, offset, nbytes, at))
        data_start = -(-cur.pos // self.alignment) * self.alignment
        self.check_layout(infos, data_start)
        self.facts["data_offset"] = data_start

    def tensor_bytes(self, name: str, dims: list[int], ggml_type: int, at: int) -> int:
        """Size of a tensor from its dims and type; -1 when the type is unknown (reported)."""
        elements = 1
        for d in dims:
            elements *= d
        if ggml_type not in GGML_TYPE_SIZES:
            self.ctx.add(
                RuleId.MALFORMED,
                Severity.MEDIUM,
                f"GGUF tensor {name!r} has unknown ggml type {ggml_type}; its size cannot be checked",
                offset=at,
            )
            return -1
        block, type_size = GGML_TYPE_SIZES[ggml_type]
        if dims and dims[0] % block:
            raise GGUFError(
                f"tensor {name!r}: row of {dims[0]} is not a multiple of the block size {block}", at
            )
        return elements // block * type_size

    def check_layout(self, infos: list[tuple[str, int, int, int]], data_start: int) -> None:
        size = self.cur.size
        spans: list[tuple[int, int, str]] = []
        for name, offset, nbytes, at in infos:
            if offset % self.alignment:
                raise GGUFError(f"tensor {name!r} offset {offset} is not aligned to {self.alignment}", at)
            if nbytes < 0:
                continue
            end = data_start + offset + nbytes
            if end > size:
                raise GGUFError(
                    f"tensor {name!r} data [{data_start + offset}, {end}) lies beyond the end of the file "
                    f"({size} bytes)",
                    at,
                )
            spans.append((offset, offset + nbytes, name))
        spans.sort()
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            if s2 < e1:
                raise GGUFError(f"tensors {n1!r} and {n2!r} overlap in the data section", data_start + s2)

    def publish(self) -> None:
        self.ctx.set_metadata("gguf", self.facts)
