"""The pickle opcode table and the decoding of opcode arguments (no walking, no judgement here).

Everything a walker needs to know about the byte format: which opcodes the CPython unpickler accepts
(protocols 0-5), how wide their arguments are, how protocol 0 text arguments decode the way the
unpickler decodes them (not the way `pickletools` does: `int(x, 0)` accepts what pickletools rejects),
and the byte pattern of a tuple of inert scalars that the walker matches in one C call.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Callable
from typing import Any, Final

CHUNK: Final = 1 << 20  # bytes read per refill
MAX_LINE: Final = 1 << 16  # protocol 0 text arguments (GLOBAL module/name, GET/PUT indexes) we keep
# While not at EOF, keep this many bytes ahead of the current opcode: every fixed-size argument, every
# short string (<= 261 bytes) and both text lines of a GLOBAL fit, so no handler ever waits for a refill.
GUARD: Final = 2 * MAX_LINE + 64
MAX_SHORT: Final = 256  # strings up to this many bytes are kept as values (they may feed STACK_GLOBAL)
MAX_ITEMS: Final = (
    64  # tuples/lists/dicts are tracked while this small (shapes, dtype states, persistent ids)
)
MAX_LIST_ITEMS: Final = 1 << 14  # lists of plain strings/ints may grow further (legacy torch storage keys)

u2 = struct.Struct("<H").unpack_from
i4 = struct.Struct("<i").unpack_from
u4 = struct.Struct("<I").unpack_from
u8 = struct.Struct("<Q").unpack_from
f8 = struct.Struct(">d").unpack_from

# Every opcode the CPython unpickler accepts (protocols 0-5); anything else stops a real loader.
OPCODE_NAMES: Final[dict[int, str]] = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
    0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
    0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
    0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
    0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
    0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT",
    0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1",
    0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
    0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}  # fmt: skip
VALID_OPCODES: Final = frozenset(OPCODE_NAMES)

# Length-prefixed payloads: opcode -> (header bytes incl. the opcode, length reader, is text).
PAYLOAD_OPS: Final[dict[int, tuple[int, Callable[[bytes, int], tuple[int]], bool]]] = {
    0x58: (5, u4, True),  # BINUNICODE
    0x8D: (9, u8, True),  # BINUNICODE8
    0x54: (5, i4, True),  # BINSTRING (a str under the default encoding)
    0x42: (5, u4, False),  # BINBYTES
    0x8E: (9, u8, False),  # BINBYTES8
    0x96: (9, u8, False),  # BYTEARRAY8
}
# Protocol 0 opcodes whose argument is a newline-terminated line: INT LONG FLOAT STRING UNICODE PERSID GET PUT
TEXT_OPS: Final = frozenset({0x49, 0x4C, 0x46, 0x53, 0x56, 0x50, 0x67, 0x70})

# A tuple built only from inert scalars (ints, floats, None, bools, memo GETs), optionally memoized.
# Dense pickles (lists of records) are mostly these; matching one in C is much cheaper than walking
# its 5-10 opcodes in Python. The raw bytes are kept so a hook can still decode the tuple later.
TUPLE_START: Final = b"KMJGN\x88\x89)hj\x95t"  # bytes that can follow the MARK of such a tuple
FAST_TUPLE = re.compile(
    rb"\((?:K.|M..|J....|G.{8}|N|\x88|\x89|\)|h.|j....|\x95.{8}){0,24}t(\x94)?", re.DOTALL
)


def parse_int_line(raw: bytes) -> Any:
    """INT/LONG text argument as the unpickler reads it (int(x, 0) accepts what pickletools rejects)."""
    text = raw.rstrip(b"L")
    if raw == b"00":
        return False
    if raw == b"01":
        return True
    try:
        return int(text, 0) if len(text) <= 40 else None
    except ValueError:
        return None


def string_line(raw: bytes) -> str | None:
    """Protocol 0 STRING argument: a quoted repr; the unpickler escape-decodes it."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
        try:
            return codecs.escape_decode(raw[1:-1])[0].decode("latin-1")  # type: ignore[attr-defined]
        except ValueError:
            return None
    return None


def decode_fast_tuple(raw: bytes) -> tuple[Any, ...] | None:
    """Decode the scalars of a fast-path tuple (memo GETs come back as None)."""
    out: list[Any] = []
    pos = 1
    end = len(raw) - (2 if raw.endswith(b"t\x94") else 1)
    while pos < end:
        op = raw[pos]
        if op == 0x4B:
            out.append(raw[pos + 1])
            pos += 2
        elif op == 0x4D:
            out.append(u2(raw, pos + 1)[0])
            pos += 3
        elif op == 0x4A:
            out.append(i4(raw, pos + 1)[0])
            pos += 5
        elif op == 0x47:
            out.append(f8(raw, pos + 1)[0])
            pos += 9
        elif op in (0x4E, 0x29):
            out.append(None if op == 0x4E else ())
            pos += 1
        elif op in (0x88, 0x89):
            out.append(op == 0x88)
            pos += 1
        elif op == 0x68:
            out.append(None)
            pos += 2
        elif op == 0x6A:
            out.append(None)
            pos += 5
        else:
            return None
    return tuple(out)
