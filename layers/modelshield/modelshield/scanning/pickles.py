"""Pickle scanning without unpickling: a streaming opcode walker, global judgement and the pickle scanner.

Why our own walker: `pickletools.genops` (and the scanners built on it) is slow on opcode-dense files
and stops at the first STOP or the first opcode it dislikes, which is exactly where attackers hide the
second half of a payload. This walker reads the stream in large chunks, dispatches on opcode bytes,
skips long byte/string payloads by seeking, and keeps a *symbolic* stack and memo: short strings,
small ints/tuples/dicts, imported globals and the results of calling them. That is enough to

- resolve STACK_GLOBAL through the memo and the stack the way the unpickler would (MARK fences, DUP,
  MEMOIZE numbering, PUT/GET), or say honestly that it could not (fail closed);
- see who calls an import (REDUCE, BUILD reaching __setstate__, OBJ/INST, NEWOBJ/NEWOBJ_EX);
- keep going where loaders keep going: data after STOP, several pickles in one stream, FRAME lengths
  that lie, protocol 5 out-of-band buffers; and to stop and say so where they would stop.

Memory stays bounded whatever the file size: payloads are skipped, containers are tracked only while
small, the memo keeps only values that can matter later (strings, globals, calls of interest), memo key
numbering is kept as a dense counter plus a small sparse set, and stack/memo limits from `Limits` turn
into MS-SCAN-INCOMPLETE findings.

Nothing here imports or calls anything named in the pickle.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import copyreg
import io
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.pickle_globals import GlobalJudgement, GlobalVerdict, judge_global
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size

CHUNK = 1 << 20  # bytes read per refill
GUARD = 64  # while not at EOF, keep this many bytes ahead of `pos`: every fixed-size argument fits
MAX_SHORT = 256  # strings up to this many bytes are kept as values (they may feed STACK_GLOBAL)
MAX_ITEMS = 64  # tuples/lists/dicts are tracked while this small (shapes, dtype states, persistent ids)
MAX_LIST_ITEMS = 1 << 14  # lists of plain strings/ints may grow further (legacy torch storage keys)
MAX_LINE = 1 << 16  # protocol 0 text arguments (GLOBAL module/name, GET/PUT indexes) we keep
MAX_DECOMPILE_BYTES = 2 << 20  # fickling only runs on flagged pickles up to this size
MAX_DECOMPILE_CHARS = 2048
MAX_REPORTED_GLOBALS = 1000
MAX_TRAILING_PICKLES = 10_000  # extra pickles walked after the first STOP before giving up

_u2 = struct.Struct("<H").unpack_from
_i4 = struct.Struct("<i").unpack_from
_u4 = struct.Struct("<I").unpack_from
_u8 = struct.Struct("<Q").unpack_from

# Every opcode the CPython unpickler accepts (protocols 0-5); anything else stops a real loader.
OPCODE_NAMES: dict[int, str] = {
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
VALID_OPCODES = frozenset(OPCODE_NAMES)

# A tuple built only from inert scalars (ints, floats, None, bools, memo GETs), optionally memoized.
# Dense pickles (lists of records) are mostly these; matching one in C is much cheaper than walking
# its 5-10 opcodes in Python. The raw bytes are kept so a hook can still decode the tuple later.
_TUPLE_START = b"KMJGN\x88\x89)hj\x95t"  # bytes that can follow the MARK of such a tuple
_FAST_TUPLE = re.compile(
    rb"\((?:K.|M..|J....|G.{8}|N|\x88|\x89|\)|h.|j....|\x95.{8}){0,24}t(\x94)?", re.DOTALL
)


class Opaque:
    """Marker for the result of something we do not model (e.g. a long string)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


class Global:
    """An imported global on the symbolic stack."""

    __slots__ = ("module", "name", "record")

    def __init__(self, module: str, name: str, record: ImportRecord | None) -> None:
        self.module = module
        self.name = name
        self.record = record


class Call:
    """The result of calling something (REDUCE/NEWOBJ/OBJ/INST), with the state BUILD gave it."""

    __slots__ = ("args", "func", "keep", "state")

    def __init__(self, func: Any, args: Any, keep: bool) -> None:
        self.func = func
        self.args = args
        self.state: Any = None
        self.keep = keep  # worth remembering in the memo (a dtype, a hooked class, something suspicious)

    @property
    def global_name(self) -> str | None:
        return f"{self.func.module}.{self.func.name}" if type(self.func) is Global else None


class _Full:
    """Sentinel: a tracked list/dict whose contents were dropped (too big or not plain data).

    Lists and dicts on the symbolic stack are plain `list`/`dict` objects (cheap to make on dense
    pickles); a dropped list holds just this sentinel, a dropped dict has it as a key."""

    __slots__ = ()


FULL = _Full()


def is_full(value: list[Any] | dict[Any, Any]) -> bool:
    return (FULL in value) if type(value) is dict else (len(value) == 1 and value[0] is FULL)


@dataclass
class ImportRecord:
    """One global imported by one pickle (deduplicated by name, first offset kept)."""

    module: str
    name: str
    opcode: str
    offset: int
    judgement: GlobalJudgement
    called_by: list[str] = field(default_factory=list)
    count: int = 1

    @property
    def qualified(self) -> str:
        return self.judgement.name

    def called(self, how: str) -> None:
        if how not in self.called_by and len(self.called_by) < 8:
            self.called_by.append(how)


@dataclass
class WalkResult:
    """What walking one pickle (PROTO ... STOP) found."""

    start: int
    end: int  # offset just after STOP, or where parsing stopped
    stopped: bool  # reached STOP
    error: str | None = None
    error_offset: int | None = None
    imports: dict[str, ImportRecord] = field(default_factory=dict)
    value: Any = None  # what STOP returned (symbolically)
    persistent_ids: list[Any] = field(default_factory=list)
    aborted: bool = False  # a limit stopped the walk (already reported as incomplete)

    @property
    def denied(self) -> list[ImportRecord]:
        return [r for r in self.imports.values() if r.judgement.verdict is GlobalVerdict.DENY]


# A BUILD hook gets the walker, the object BUILD just set state on, and the offset after the BUILD
# opcode; it returns the offset where opcodes resume (joblib writes array bytes right there).
BuildHook = Callable[["PickleWalker", Call, int, int], int]
_BUILD_HOOKS: dict[str, BuildHook] = {}
# Calls whose results are kept in the memo because a hook or the dtype logic needs them later.
_KEEP_CALLS: set[str] = {"numpy.dtype"}


def register_build_hook(qualified_name: str, hook: BuildHook) -> None:
    """Let a format module act when BUILD sets the state of an instance of `qualified_name`."""
    _BUILD_HOOKS[qualified_name] = hook
    _KEEP_CALLS.add(qualified_name)


class _Stop(Exception):
    """Internal: the walk cannot continue (the real loader would have stopped here too)."""

    def __init__(self, message: str, offset: int, *, limit: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.limit = limit


def _parse_int_line(raw: bytes) -> Any:
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


def _string_line(raw: bytes) -> str | None:
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
            out.append(_u2(raw, pos + 1)[0])
            pos += 3
        elif op == 0x4A:
            out.append(_i4(raw, pos + 1)[0])
            pos += 5
        elif op == 0x47:
            out.append(struct.unpack_from(">d", raw, pos + 1)[0])
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


def as_text(value: Any) -> str | None:
    """A tracked string value (str, or bytes decoded leniently), else None."""
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return value if type(value) is str else None


def as_tuple(value: Any) -> tuple[Any, ...] | None:
    """A tracked tuple value, whichever path built it."""
    if type(value) is tuple:
        return value
    if type(value) is bytearray:  # the fast path's raw opcodes (nothing else leaves a bytearray)
        return decode_fast_tuple(bytes(value))
    return None


class PickleWalker:
    """Walks pickles in a seekable stream, region by region, reporting into a ScanContext."""

    def __init__(self, stream: BinaryIO, ctx: ScanContext, *, torchscript: bool = False) -> None:
        self.stream = stream
        self.ctx = ctx
        self.torchscript = torchscript
        self.max_memo = ctx.limits.max_pickle_memo
        self.max_stack = ctx.limits.max_pickle_stack
        self.notes: set[str] = set()  # one-off findings already made (per walker)
        self.trial = False  # a sniffer's trial walk: no hooks

    # -- findings made while walking -------------------------------------------------------------
    def _once(self, key: str) -> bool:
        if key in self.notes:
            return False
        self.notes.add(key)
        return True

    def malformed(self, message: str, offset: int, severity: Severity = Severity.HIGH, **detail: Any) -> None:
        self.ctx.add(RuleId.MALFORMED, severity, message, offset=offset, **detail)

    # -- imports ---------------------------------------------------------------------------------
    def _import(self, result: WalkResult, module: str, name: str, opcode: str, offset: int) -> Global:
        judgement = judge_global(module, name, torchscript=self.torchscript)
        key = judgement.name
        record = result.imports.get(key)
        if record is None:
            if len(result.imports) >= MAX_REPORTED_GLOBALS * 10:
                raise _Stop("more than 10000 distinct globals in one pickle", offset, limit=True)
            record = ImportRecord(module, name, opcode, offset, judgement)
            result.imports[key] = record
        else:
            record.count += 1
        return Global(module, name, record)

    def _unresolved(self, result: WalkResult, what: str, offset: int, opcode: str) -> Global:
        """A dynamic import we could not trace to literal strings: malformed and unknown (fail closed)."""
        self.malformed(
            f"{opcode} with {what}: the imported name is built dynamically and could not be resolved",
            offset,
            opcode=opcode,
        )
        judgement = GlobalJudgement(GlobalVerdict.UNKNOWN, f"<unresolved {opcode}>", what)
        key = f"<unresolved@{offset}>"
        record = ImportRecord("<unresolved>", what, opcode, offset, judgement)
        if len(result.imports) < MAX_REPORTED_GLOBALS * 10:
            result.imports[key] = record
        return Global("<unresolved>", what, record)

    def _ext(self, result: WalkResult, code: int, opcode: str, offset: int) -> Global:
        known = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
        if known is not None:
            return self._import(result, known[0], known[1], opcode, offset)
        judgement = GlobalJudgement(
            GlobalVerdict.UNKNOWN,
            f"<extension code {code}>",
            "copyreg extension code: the global it names is registered in the loading process, "
            "not in the file, so it cannot be judged",
        )
        key = f"<ext {code}>"
        record = result.imports.get(key)
        if record is None:
            record = ImportRecord("<copyreg extension>", str(code), opcode, offset, judgement)
            result.imports[key] = record
        return Global("<copyreg extension>", str(code), record)

    # -- the walk --------------------------------------------------------------------------------
    def walk(self, start: int, end: int, *, trial: bool = False) -> WalkResult:
        """Walk one pickle from `start` until STOP (or an error) without reading past `end`.

        A `trial` walk (the sniffer's) runs no format hooks.
        """
        result = WalkResult(start=start, end=start, stopped=False)
        self.trial = trial
        try:
            self._walk(result, start, end)
        except _Stop as stop:
            result.error = str(stop)
            result.error_offset = stop.offset
            result.end = stop.offset
            result.aborted = stop.limit
            if stop.limit:  # a limit, not the file, ended the walk: fail closed
                self.ctx.incomplete(f"pickle walk stopped: {stop}", offset=stop.offset)
        return result

    def _fill(self, offset: int, end: int) -> bytes:
        """Up to CHUNK bytes at `offset` (fewer only at `end` or where the stream really ends)."""
        want = min(CHUNK, end - offset)
        self.stream.seek(offset)
        data = self.stream.read(want)
        while 0 < len(data) < want:  # a short read from a pipe-like stream: keep reading
            more = self.stream.read(want - len(data))
            if not more:
                break
            data += more
        return data

    def _walk(self, result: WalkResult, start: int, end: int) -> None:
        """The hot loop. Locals only (no closures over loop state): this runs once per opcode."""
        ctx = self.ctx
        fill = self._fill
        base = start
        buf = fill(base, end)
        pos = 0
        eof = len(buf) < CHUNK or base + len(buf) >= end
        guard = len(buf) if eof else len(buf) - GUARD
        stack: list[Any] = []
        push = stack.append
        marks: list[int] = []
        floor = 0  # stack items below the innermost MARK are out of reach (the unpickler's fence)
        memo: dict[int, Any] = {}
        memo_get_ = memo.get
        self._sparse = set()
        self._memo_full = False
        dense = 0  # memo keys 0..dense-1 exist; self._sparse holds any others
        slow_memo = False  # sparse keys exist or the memo is full: take the careful path
        max_memo = self.max_memo
        max_stack = self.max_stack
        frame_end = -1
        fast_match = _FAST_TUPLE.match
        tuple_start = _TUPLE_START
        bytes_ = bytes
        str_ = str
        global_ = Global
        call_ = Call
        tlist = list
        tdict = dict
        try:
            while True:
                if pos >= guard:
                    if not eof:
                        ctx.check()
                        if len(stack) > max_stack or len(marks) > max_stack:
                            raise _Stop(
                                f"pickle stack deeper than {max_stack}: not followed further "
                                "(raise Limits.max_pickle_stack to scan it)",
                                base + pos,
                                limit=True,
                            )
                        base += pos
                        buf = fill(base, end)
                        pos = 0
                        eof = len(buf) < CHUNK or base + len(buf) >= end
                        guard = len(buf) if eof else len(buf) - GUARD
                        continue
                    if pos >= len(buf):
                        raise _Stop("pickle ends without STOP (truncated or cut short)", base + pos)
                op = buf[pos]
                # ---- the common opcodes first (dense data) ----------------------------------------
                if op < 0x80:  # protocol 0/1 opcodes, most frequent first
                    if op == 0x4B or op == 0x4D or op == 0x4A:  # BININT1/2/4, usually a run of them
                        while True:
                            if op == 0x4B:
                                push(buf[pos + 1])
                                pos += 2
                            elif op == 0x4D:
                                push(buf[pos + 1] | buf[pos + 2] << 8)
                                pos += 3
                            elif op == 0x4A:
                                push(_i4(buf, pos + 1)[0])
                                pos += 5
                            else:
                                break
                            if pos >= guard:
                                break
                            op = buf[pos]
                    elif op == 0x28:  # MARK
                        m = fast_match(buf, pos) if buf[pos + 1] in tuple_start and not slow_memo else None
                        if m is not None:
                            pos2 = m.end()
                            push(bytearray(buf[pos:pos2]))  # a bytearray on the stack = an inert tuple
                            if m.group(1) is not None:
                                dense += 1
                            pos = pos2
                        else:
                            marks.append(len(stack))
                            floor = len(stack)
                            pos += 1
                    elif op == 0x68 or op == 0x6A:  # BINGET / LONG_BINGET
                        if op == 0x68:
                            k = buf[pos + 1]
                            pos += 2
                        else:
                            k = _u4(buf, pos + 1)[0]
                            pos += 5
                        v = memo_get_(k)
                        if v is None and k >= dense:
                            v = self._memo_missing(k, base + pos)
                        push(v)
                    elif op == 0x5D:  # EMPTY_LIST
                        push(tlist())
                        pos += 1
                    elif op == 0x7D:  # EMPTY_DICT
                        push(tdict())
                        pos += 1
                    elif op == 0x29:  # EMPTY_TUPLE
                        push(())
                        pos += 1
                    elif op == 0x65 or op == 0x75 or op == 0x90:  # APPENDS / SETITEMS / ADDITEMS
                        if not marks:
                            raise _Stop(
                                f"{OPCODE_NAMES[op]} without a MARK: a real unpickler fails here", base + pos
                            )
                        m0 = marks.pop()
                        floor = marks[-1] if marks else 0
                        if m0 <= floor:
                            raise _underflow(op, base + pos, marks)
                        items = stack[m0:]
                        del stack[m0:]
                        target = stack[-1]
                        tt = type(target)
                        if op == 0x65 and tt is tlist:
                            _extend(target, items)
                        elif op == 0x75:
                            if len(items) % 2:
                                raise _Stop("SETITEMS with an odd number of items", base + pos)
                            if tt is tdict:
                                for i in range(0, len(items), 2):
                                    _setitem(target, items[i], items[i + 1])
                            elif tt is global_ or tt is call_:
                                _called(target, "SETITEMS")
                        elif tt is global_ or tt is call_:
                            _called(target, OPCODE_NAMES[op])
                        pos += 1
                    elif op == 0x73:  # SETITEM
                        if len(stack) - 3 < floor:
                            raise _underflow(op, base + pos, marks)
                        value = stack.pop()
                        key = stack.pop()
                        target = stack[-1]
                        tt = type(target)
                        if tt is tdict:
                            _setitem(target, key, value)
                        elif tt is global_ or tt is call_:
                            _called(target, "SETITEM")
                        pos += 1
                    elif op == 0x61:  # APPEND
                        if len(stack) - 2 < floor:
                            raise _underflow(op, base + pos, marks)
                        value = stack.pop()
                        target = stack[-1]
                        tt = type(target)
                        if tt is tlist:
                            _extend(target, [value])
                        elif tt is global_ or tt is call_:
                            _called(target, "APPEND")
                        pos += 1
                    elif op == 0x74:  # TUPLE
                        if not marks:
                            raise _Stop("TUPLE without a MARK: a real unpickler fails here", base + pos)
                        m0 = marks.pop()
                        floor = marks[-1] if marks else 0
                        t3 = tuple(stack[m0:]) if len(stack) - m0 <= MAX_ITEMS else None
                        del stack[m0:]
                        push(t3)
                        pos += 1
                    elif op == 0x71 or op == 0x72:  # BINPUT / LONG_BINPUT
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        k = buf[pos + 1] if op == 0x71 else _u4(buf, pos + 1)[0]
                        dense = self._memo_put(memo, k, stack[-1], dense, base + pos)
                        slow_memo = bool(self._sparse) or self._memo_full
                        pos += 2 if op == 0x71 else 5
                    elif op == 0x47:  # BINFLOAT
                        push(None)
                        pos += 9
                    elif op == 0x4E:  # NONE
                        push(None)
                        pos += 1
                    elif op in _PAYLOAD_OPS:  # BINUNICODE, BINBYTES, *8 variants, BYTEARRAY8, BINSTRING
                        hdr, fmt, textual = _PAYLOAD_OPS[op]
                        n = fmt(buf, pos + 1)[0]
                        if n < 0:
                            raise _Stop(f"{OPCODE_NAMES[op]} with a negative length", base + pos)
                        stop = pos + hdr + n
                        if base + stop > end:
                            raise _Stop(
                                f"{OPCODE_NAMES[op]} declares {n} bytes but only {end - base - pos - hdr} "
                                "remain: the pickle is truncated or lies about a length",
                                base + pos,
                                limit=True,
                            )
                        if textual and n <= MAX_SHORT:
                            if stop > len(buf):
                                guard = pos
                                continue
                            raw = buf[pos + hdr : stop]
                            push(raw.decode("latin-1") if op == 0x54 else raw)
                            pos = stop
                        else:
                            push(Opaque(f"a string of {n} bytes") if textual else None)
                            if stop <= len(buf):
                                pos = stop
                            else:  # skip the payload without reading it
                                base += stop
                                buf = fill(base, end)
                                pos = 0
                                eof = len(buf) < CHUNK or base + len(buf) >= end
                                guard = len(buf) if eof else len(buf) - GUARD
                    elif op == 0x43 or op == 0x55:  # SHORT_BINBYTES / SHORT_BINSTRING
                        stop = pos + 2 + buf[pos + 1]
                        if stop > len(buf):
                            if not eof:
                                guard = pos
                                continue
                            raise _Stop("pickle truncated inside a string", base + pos)
                        push(buf[pos + 2 : stop].decode("latin-1") if op == 0x55 else None)
                        pos = stop
                    elif op == 0x52 or op == 0x81:  # REDUCE / NEWOBJ: callable, args -> result
                        if len(stack) - 2 < floor:
                            raise _underflow(op, base + pos, marks)
                        args = stack.pop()
                        func = stack.pop()
                        _called(func, OPCODE_NAMES[op])
                        push(self._make_call(func, args))
                        pos += 1
                    elif op == 0x62:  # BUILD: obj.__setstate__(state) or attribute updates
                        if len(stack) - 2 < floor:
                            raise _underflow(op, base + pos, marks)
                        state = stack.pop()
                        target = stack[-1]
                        tt = type(target)
                        if tt is call_:
                            target.state = state
                            _called(target, "BUILD")
                            gname = target.global_name
                            hook = _BUILD_HOOKS.get(gname) if gname is not None and not self.trial else None
                            if hook is not None:
                                resume = hook(self, target, base + pos + 1, end)
                                stack[-1] = None  # the loader replaces the placeholder (e.g. by the array)
                                base = resume
                                buf = fill(base, end)
                                pos = 0
                                eof = len(buf) < CHUNK or base + len(buf) >= end
                                guard = len(buf) if eof else len(buf) - GUARD
                                continue
                        elif tt is global_:
                            self._build_on_global(target, base + pos)
                        pos += 1
                    elif op == 0x63 or op == 0x69:  # GLOBAL / INST: "module\nname\n"
                        got = _line(buf, pos + 1, eof, base)
                        got2 = _line(buf, got[1], eof, base) if got is not None and got[1] >= 0 else got
                        if got2 is None:
                            guard = pos
                            continue
                        opname = OPCODE_NAMES[op]
                        if got[1] < 0 or got2[1] < 0:  # type: ignore[index]
                            raise _Stop(f"{opname} argument longer than {MAX_LINE} bytes", base + pos)
                        mod_raw, name_raw = got[0], got2[0]  # type: ignore[index]
                        try:
                            module, name = mod_raw.decode("utf-8"), name_raw.decode("utf-8")
                        except UnicodeDecodeError:
                            module, name = mod_raw.decode("latin-1"), name_raw.decode("latin-1")
                            self.malformed(f"{opname} module/name are not UTF-8", base + pos)
                        g = self._import(result, module, name, opname, base + pos)
                        if op == 0x69:
                            args, floor = _pop_mark(stack, marks, op, base + pos)
                            g.record.called("INST")  # type: ignore[union-attr]
                            push(self._make_call(g, tuple(args) if len(args) <= MAX_ITEMS else None))
                        else:
                            push(g)
                        pos = got2[1]
                    elif op == 0x2E:  # STOP
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        result.value = stack[-1]
                        result.stopped = True
                        result.end = base + pos + 1
                        if frame_end > result.end and self._once(f"frame-stop-{result.start}"):
                            self.malformed(
                                "STOP comes before the end of the current FRAME: the rest of the frame is "
                                "data a loader never reads",
                                base + pos,
                                Severity.MEDIUM,
                            )
                        return
                    elif op == 0x6F:  # OBJ: MARK cls args... -> cls(*args)
                        items, floor = _pop_mark(stack, marks, op, base + pos)
                        if not items:
                            raise _Stop(
                                "OBJ without a class after its MARK: a real unpickler fails here", base + pos
                            )
                        _called(items[0], "OBJ")
                        push(self._make_call(items[0], tuple(items[1:]) if len(items) <= MAX_ITEMS else None))
                        pos += 1
                    elif op == 0x91 or op == 0x6C or op == 0x64:  # FROZENSET / LIST / DICT
                        items, floor = _pop_mark(stack, marks, op, base + pos)
                        if op == 0x6C:
                            lst = tlist()
                            _extend(lst, items)
                            push(lst)
                        elif op == 0x64:
                            if len(items) % 2:
                                raise _Stop("DICT with an odd number of items", base + pos)
                            d = tdict()
                            for i in range(0, len(items), 2):
                                _setitem(d, items[i], items[i + 1])
                            push(d)
                        else:
                            push(None)
                        pos += 1
                    elif op == 0x30:  # POP (pops the MARK itself when nothing is above it)
                        if len(stack) > floor:
                            stack.pop()
                        else:
                            _, floor = _pop_mark(stack, marks, op, base + pos)
                        pos += 1
                    elif op == 0x31:  # POP_MARK
                        _, floor = _pop_mark(stack, marks, op, base + pos)
                        pos += 1
                    elif op == 0x32:  # DUP
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        push(stack[-1])
                        pos += 1
                    elif op in _TEXT_OPS:  # INT LONG FLOAT STRING UNICODE PERSID GET PUT: "...\n" arguments
                        got = _line(buf, pos + 1, eof, base)
                        if got is None:
                            guard = pos
                            continue
                        raw, after = got
                        if after < 0:  # longer than MAX_LINE: only data opcodes may be that long
                            if op in (0x67, 0x70):
                                raise _Stop(
                                    f"{OPCODE_NAMES[op]} index longer than {MAX_LINE} bytes", base + pos
                                )
                            push(Opaque("a long text argument"))
                            base = self._skip_line(base + pos + 1, end)
                            buf = fill(base, end)
                            pos = 0
                            eof = len(buf) < CHUNK or base + len(buf) >= end
                            guard = len(buf) if eof else len(buf) - GUARD
                            continue
                        if op == 0x49 or op == 0x4C:
                            push(_parse_int_line(raw))
                        elif op == 0x46:
                            push(None)
                        elif op == 0x53:
                            s = _string_line(raw)
                            if s is None:
                                raise _Stop(
                                    "STRING argument is not quoted: a real unpickler fails here", base + pos
                                )
                            push(s if len(s) <= MAX_SHORT else Opaque("a long string"))
                        elif op == 0x56:
                            s = raw.decode("raw_unicode_escape")
                            push(s if len(s) <= MAX_SHORT else Opaque("a long string"))
                        elif op == 0x50:
                            if len(result.persistent_ids) < MAX_LIST_ITEMS:
                                result.persistent_ids.append(raw[:MAX_SHORT])
                            push(None)
                        else:
                            idx = _parse_int_line(raw)
                            if type(idx) is not int:
                                raise _Stop(f"{OPCODE_NAMES[op]} index is not an integer", base + pos)
                            if op == 0x67:
                                v = memo_get_(idx)
                                push(
                                    v
                                    if v is not None or 0 <= idx < dense
                                    else self._memo_missing(idx, base + pos)
                                )
                            else:
                                if len(stack) <= floor:
                                    raise _underflow(op, base + pos, marks)
                                dense = self._memo_put(memo, idx, stack[-1], dense, base + pos)
                                slow_memo = bool(self._sparse) or self._memo_full
                        pos = after
                    elif op == 0x51:  # BINPERSID
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        pid = stack.pop()
                        if len(result.persistent_ids) < MAX_LIST_ITEMS:
                            result.persistent_ids.append(pid)
                        push(None)
                        pos += 1
                    else:
                        raise _Stop(f"invalid opcode 0x{op:02x}: a real unpickler stops here", base + pos)
                else:  # protocol 2+ opcodes
                    if op == 0x94:  # MEMOIZE
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        v = stack[-1]
                        t = type(v)
                        if slow_memo:
                            dense = self._memo_put(memo, dense + len(self._sparse), v, dense, base + pos)
                            slow_memo = bool(self._sparse) or self._memo_full
                        elif t is bytes_ or t is str_ or t is global_ or (t is call_ and v.keep):
                            if len(memo) < max_memo:
                                memo[dense] = v
                                dense += 1
                            else:
                                dense = self._memo_put(memo, dense, v, dense, base + pos)
                                slow_memo = True
                        else:
                            dense += 1
                        pos += 1
                    elif op == 0x8C:  # SHORT_BINUNICODE: raw UTF-8, decoded only if used; often a run
                        while True:
                            stop = pos + 2 + buf[pos + 1]
                            if stop > len(buf):
                                if not eof:
                                    guard = pos  # refill at the top of the loop, then retry
                                    break
                                raise _Stop("pickle truncated inside a string", base + pos)
                            v = buf[pos + 2 : stop]
                            push(v)
                            pos = stop
                            if pos >= guard:
                                break
                            if buf[pos] == 0x94 and not slow_memo and len(memo) < max_memo:
                                memo[dense] = v  # the MEMOIZE protocol 4 writes after every string
                                dense += 1
                                pos += 1
                                if pos >= guard:
                                    break
                            if buf[pos] != 0x8C:
                                break
                    elif 0x85 <= op <= 0x87:  # TUPLE1..3
                        n = op - 0x84
                        if len(stack) - n < floor:
                            raise _underflow(op, base + pos, marks)
                        t3 = tuple(stack[-n:])
                        del stack[-n:]
                        push(t3)
                        pos += 1
                    elif op == 0x88 or op == 0x89:  # NEWTRUE / NEWFALSE
                        push(op == 0x88)
                        pos += 1
                    elif op == 0x95:  # FRAME: a length hint; the C unpickler reads on across frame ends
                        n = _u8(buf, pos + 1)[0]
                        here = base + pos
                        if here < frame_end and self._once(f"frame-overlap-{result.start}"):
                            self.malformed(
                                "FRAME starts inside the previous frame: the C and Python unpicklers read "
                                "this stream differently",
                                here,
                            )
                        if here + 9 + n > end and self._once(f"frame-long-{result.start}"):
                            self.malformed(
                                f"FRAME declares {n} bytes, beyond the end of the data: loaders disagree "
                                "on where this pickle ends",
                                here,
                            )
                        frame_end = here + 9 + n
                        pos += 9
                    elif op == 0x93:  # STACK_GLOBAL
                        if len(stack) - 2 < floor:
                            raise _underflow(op, base + pos, marks)
                        name_v = stack.pop()
                        module_v = stack.pop()
                        name = _as_str(name_v)
                        module = _as_str(module_v)
                        if module is not None and name is not None:
                            push(self._import(result, module, name, "STACK_GLOBAL", base + pos))
                        else:
                            what = (
                                "a module/name that are not literal strings traced through the stack and memo"
                            )
                            if type(module_v) is Opaque or type(name_v) is Opaque:
                                what = "a module/name string too long to track"
                            push(self._unresolved(result, what, base + pos, "STACK_GLOBAL"))
                        pos += 1
                    elif op == 0x52 or op == 0x81:  # REDUCE / NEWOBJ: callable, args -> result
                        if len(stack) - 2 < floor:
                            raise _underflow(op, base + pos, marks)
                        args = stack.pop()
                        func = stack.pop()
                        _called(func, OPCODE_NAMES[op])
                        push(self._make_call(func, args))
                        pos += 1
                    elif op == 0x92:  # NEWOBJ_EX
                        if len(stack) - 3 < floor:
                            raise _underflow(op, base + pos, marks)
                        kwargs = stack.pop()
                        args = stack.pop()
                        cls = stack.pop()
                        _called(cls, "NEWOBJ_EX")
                        push(self._make_call(cls, (args, kwargs)))
                        pos += 1
                    elif op == 0x80:  # PROTO
                        proto = buf[pos + 1]
                        if proto > 5 and self._once(f"proto-{result.start}"):
                            self.malformed(f"unsupported pickle protocol {proto}", base + pos)
                        pos += 2
                    elif op in _PAYLOAD_OPS:  # BINUNICODE, BINBYTES, *8 variants, BYTEARRAY8, BINSTRING
                        hdr, fmt, textual = _PAYLOAD_OPS[op]
                        n = fmt(buf, pos + 1)[0]
                        if n < 0:
                            raise _Stop(f"{OPCODE_NAMES[op]} with a negative length", base + pos)
                        stop = pos + hdr + n
                        if base + stop > end:
                            raise _Stop(
                                f"{OPCODE_NAMES[op]} declares {n} bytes but only {end - base - pos - hdr} "
                                "remain: the pickle is truncated or lies about a length",
                                base + pos,
                                limit=True,
                            )
                        if textual and n <= MAX_SHORT:
                            if stop > len(buf):
                                guard = pos
                                continue
                            raw = buf[pos + hdr : stop]
                            push(raw.decode("latin-1") if op == 0x54 else raw)
                            pos = stop
                        else:
                            push(Opaque(f"a string of {n} bytes") if textual else None)
                            if stop <= len(buf):
                                pos = stop
                            else:  # skip the payload without reading it
                                base += stop
                                buf = fill(base, end)
                                pos = 0
                                eof = len(buf) < CHUNK or base + len(buf) >= end
                                guard = len(buf) if eof else len(buf) - GUARD
                    elif op == 0x8F:  # EMPTY_SET
                        push(None)
                        pos += 1
                    elif op == 0x8A:  # LONG1
                        n = buf[pos + 1]
                        if pos + 2 + n > len(buf):
                            if not eof:
                                guard = pos
                                continue
                            raise _Stop("pickle truncated inside LONG1", base + pos)
                        push(
                            int.from_bytes(buf[pos + 2 : pos + 2 + n], "little", signed=True)
                            if n <= 16
                            else None
                        )
                        pos += 2 + n
                    elif op == 0x8B:  # LONG4
                        n = _i4(buf, pos + 1)[0]
                        if n < 0:
                            raise _Stop("LONG4 with a negative length", base + pos)
                        stop = pos + 5 + n
                        if base + stop > end:
                            raise _Stop("pickle truncated inside LONG4", base + pos)
                        push(None)
                        if stop <= len(buf):
                            pos = stop
                        else:
                            base += stop
                            buf = fill(base, end)
                            pos = 0
                            eof = len(buf) < CHUNK or base + len(buf) >= end
                            guard = len(buf) if eof else len(buf) - GUARD
                    elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1 / EXT2 / EXT4
                        if op == 0x82:
                            code, width = buf[pos + 1], 1
                        elif op == 0x83:
                            code, width = _u2(buf, pos + 1)[0], 2
                        else:
                            code, width = _i4(buf, pos + 1)[0], 4
                        push(self._ext(result, code, OPCODE_NAMES[op], base + pos))
                        pos += 1 + width
                    elif op == 0x97:  # NEXT_BUFFER
                        if self._once(f"oob-{result.start}"):
                            self.malformed(
                                "protocol 5 out-of-band buffer: its bytes are not in this file (a plain "
                                "loader fails here; one given buffers fills them from elsewhere)",
                                base + pos,
                                Severity.MEDIUM,
                            )
                        push(None)
                        pos += 1
                    elif op == 0x98:  # READONLY_BUFFER
                        if len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        pos += 1
                    elif op == 0x90 or op == 0x91:  # ADDITEMS / FROZENSET
                        items, floor = _pop_mark(stack, marks, op, base + pos)
                        if op == 0x91:
                            push(None)
                        elif len(stack) <= floor:
                            raise _underflow(op, base + pos, marks)
                        else:
                            _called(stack[-1], "ADDITEMS")
                        pos += 1
                    else:
                        raise _Stop(f"invalid opcode 0x{op:02x}: a real unpickler stops here", base + pos)
        except (IndexError, struct.error):
            if not eof:
                raise
            raise _Stop("pickle truncated inside an opcode argument", base + pos) from None

    # -- helpers of the hot loop (explicit arguments: no closures over its locals) ------------------
    def _memo_put(self, memo: dict[int, Any], key: int, value: Any, dense: int, at: int) -> int:
        """PUT/MEMOIZE the careful way; returns the new dense-key counter."""
        sparse = self._sparse
        if key < 0:
            raise _Stop("negative memo index", at)
        if key >= dense and key not in sparse:
            if key == dense:
                dense += 1
                while dense in sparse:
                    sparse.discard(dense)
                    dense += 1
            else:
                if len(sparse) >= self.max_memo:
                    raise _Stop(f"memo over {self.max_memo} scattered entries", at, limit=True)
                sparse.add(key)
        t = type(value)
        if t is bytes or t is str or t is Global or (t is Call and value.keep):
            if len(memo) >= self.max_memo and key not in memo:
                if not self._memo_full:
                    # Past the limit new values are untracked (opaque), which keeps memory bounded without
                    # giving up: every GLOBAL/STACK_GLOBAL import is still judged when it executes, and one
                    # whose module or name comes from an untracked entry is unresolvable, which is itself
                    # a blocking finding. So a big benign pickle stays clean and a hidden import does not.
                    self._memo_full = True
                    self.ctx.set_metadata("pickle_memo_untracked_from_offset", at)
                memo.pop(key, None)
            else:
                memo[key] = value
        else:
            memo.pop(key, None)
        return dense

    def _memo_missing(self, key: int, at: int) -> Any:
        """A GET of a key holding nothing we track: opaque if the key exists, else the loader fails."""
        if key in self._sparse or self._memo_full:
            return None
        raise _Stop(f"memo index {key} read before it was written: a real unpickler fails here", at)

    def _skip_line(self, at_abs: int, end: int) -> int:
        """Skip a text argument longer than MAX_LINE; return the offset after its newline."""
        offset = at_abs
        while offset < end:
            self.ctx.check()
            self.stream.seek(offset)
            chunk = self.stream.read(min(CHUNK, end - offset))
            if not chunk:
                break
            nl = chunk.find(b"\n")
            if nl >= 0:
                return offset + nl + 1
            offset += len(chunk)
        raise _Stop("pickle truncated inside a text argument", at_abs)

    def _make_call(self, func: Any, args: Any) -> Call:
        keep = False
        if type(func) is Global and func.record is not None:
            keep = (
                func.record.judgement.verdict is not GlobalVerdict.ALLOW
                or func.record.qualified in _KEEP_CALLS
            )
        return Call(func, args, keep)

    def _build_on_global(self, target: Global, at: int) -> None:
        if target.record is not None:
            target.record.called("BUILD on the global itself")
        if self._once(f"build-global-{at}"):
            self.ctx.add(
                RuleId.CODE_EXEC,
                Severity.CRITICAL,
                f"BUILD sets attributes on the imported global {target.module}.{target.name} itself "
                "(monkey-patching code the loader will run)",
                offset=at,
                opcode="BUILD",
                **{"global": f"{target.module}.{target.name}"},
            )


_PAYLOAD_OPS: dict[int, tuple[int, Callable[[bytes, int], tuple[int]], bool]] = {
    0x58: (5, _u4, True),  # BINUNICODE
    0x8D: (9, _u8, True),  # BINUNICODE8
    0x54: (5, _i4, True),  # BINSTRING (a str under the default encoding)
    0x42: (5, _u4, False),  # BINBYTES
    0x8E: (9, _u8, False),  # BINBYTES8
    0x96: (9, _u8, False),  # BYTEARRAY8
}
_TEXT_OPS = frozenset({0x49, 0x4C, 0x46, 0x53, 0x56, 0x50, 0x67, 0x70})


def _underflow(op: int, at: int, marks: list[int]) -> _Stop:
    below = " (items below the MARK are out of reach)" if marks else ""
    return _Stop(
        f"stack underflow at {OPCODE_NAMES.get(op, hex(op))}{below}: a real unpickler fails here", at
    )


def _pop_mark(stack: list[Any], marks: list[int], op: int, at: int) -> tuple[list[Any], int]:
    if not marks:
        raise _Stop(f"{OPCODE_NAMES[op]} without a MARK: a real unpickler fails here", at)
    m = marks.pop()
    items = stack[m:]
    del stack[m:]
    return items, (marks[-1] if marks else 0)


def _line(buf: bytes, at: int, eof: bool, base: int) -> tuple[bytes, int] | None:
    """The newline-terminated argument at buf[at]: (text, offset after it); None = refill and retry;
    offset -1 = longer than MAX_LINE."""
    nl = buf.find(b"\n", at, at + MAX_LINE + 1)
    if nl >= 0:
        return buf[at:nl], nl + 1
    if len(buf) - at <= MAX_LINE:
        if not eof:
            return None
        raise _Stop("pickle truncated inside a text argument", base + at)
    return b"", -1


def _called(obj: Any, how: str) -> None:
    """Note who calls an import: the callable itself, or the instance whose methods run."""
    func = obj.func if type(obj) is Call else obj
    if type(func) is Global and func.record is not None:
        func.record.called(how)


_PLAIN = (bytes, str, int, bool)


def _extend(target: list[Any], items: list[Any]) -> None:
    """Track a list only while it holds plain strings/ints: retaining containers would grow memory
    (and make the cyclic GC crawl) on dense pickles, and nothing needs them."""
    if target and target[0] is FULL:
        return
    # a cheap look at the ends: list contents are hints (legacy torch keys), checked again by users
    if len(target) + len(items) > MAX_LIST_ITEMS or (
        items and (type(items[0]) not in _PLAIN or type(items[-1]) not in _PLAIN)
    ):
        target.clear()
        target.append(FULL)
    else:
        target.extend(items)


_KEY_TYPES = (bytes, str, int, bool, type(None))


def _setitem(target: dict[Any, Any], key: Any, value: Any) -> None:
    """Track scalar keys only: hashing a tuple key could walk a DUP-built structure exponentially."""
    if len(target) >= MAX_ITEMS or type(key) not in _KEY_TYPES:
        target[FULL] = True
        return
    target[key] = value


WalkAbort = _Stop  # raised by format hooks to stop a walk (the message becomes the walk's error)


def _as_str(value: Any) -> str | None:
    """A string value as the unpickler would see it (our raw UTF-8 bytes decoded), else None."""
    if type(value) is str:
        return value
    if type(value) is bytes:
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    return None


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def _record_globals(ctx: ScanContext, walk: WalkResult) -> None:
    seen: list[str] = ctx.shared.metadata.setdefault("globals", [])
    for record in walk.imports.values():
        if record.qualified not in seen and len(seen) < MAX_REPORTED_GLOBALS:
            seen.append(record.qualified)


def decompile_excerpt(data: bytes) -> str | None:
    """fickling's static decompilation of a flagged pickle into the Python it would run (never executed)."""
    if len(data) > MAX_DECOMPILE_BYTES:
        return None
    try:
        from fickling.fickle import Interpreter, InterpreterLimits, Pickled

        with contextlib.redirect_stderr(io.StringIO()):
            pickled = Pickled.load(data, fail_on_decode_error=False)
            interpreter = Interpreter(
                pickled,
                limits=InterpreterLimits(max_opcodes=50_000, max_stack_depth=5_000, max_memo_size=20_000),
            )
            module = interpreter.to_ast()
            text = ast.unparse(module)
    except Exception:  # fickling is a best-effort explainer; detection never depends on it
        return None
    lines = text.splitlines()[:20]
    return "\n".join(lines)[:MAX_DECOMPILE_CHARS]


def report_imports(ctx: ScanContext, stream: BinaryIO, walk: WalkResult) -> None:
    """Turn one walk's imports into findings: denied = MS-CODE-EXEC, unknown = MS-CODE-UNKNOWN."""
    _record_globals(ctx, walk)
    excerpt: str | None = None
    if walk.denied and walk.stopped:
        stream.seek(walk.start)
        data = stream.read(min(walk.end - walk.start, MAX_DECOMPILE_BYTES + 1))
        excerpt = decompile_excerpt(data)
    for record in walk.imports.values():
        verdict = record.judgement.verdict
        if verdict is GlobalVerdict.ALLOW:
            continue
        how = (
            f"called by {', '.join(record.called_by)}"
            if record.called_by
            else "imported but not called here (importing alone runs module code)"
        )
        detail: dict[str, Any] = {
            "global": record.qualified,
            "opcode": record.opcode,
            "called_by": ",".join(record.called_by),
            "reason": record.judgement.reason,
        }
        if record.count > 1:
            detail["count"] = record.count
        if verdict is GlobalVerdict.DENY:
            if excerpt:
                detail["decompiled"] = excerpt
            ctx.add(
                RuleId.CODE_EXEC,
                Severity.CRITICAL,
                f"pickle imports {record.qualified} via {record.opcode} ({record.judgement.reason}); {how}",
                offset=record.offset,
                **detail,
            )
        else:
            what = (
                f"unknown code: {record.qualified}"
                if not record.qualified.startswith("<")
                else f"dynamic import we could not resolve: {record.judgement.reason}"
            )
            ctx.add(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"{what} (via {record.opcode}); {how}",
                offset=record.offset,
                **detail,
            )


def report_walk(ctx: ScanContext, stream: BinaryIO, walk: WalkResult, *, what: str = "pickle") -> None:
    """Imports plus the reason a walk stopped early (malformed, or a limit already reported)."""
    report_imports(ctx, stream, walk)
    if walk.error and not walk.aborted:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"{what} stops parsing at offset {walk.error_offset}: {walk.error}",
            offset=walk.error_offset,
        )


def scan_pickle_region(
    stream: BinaryIO,
    ctx: ScanContext,
    start: int,
    end: int,
    *,
    torchscript: bool = False,
    what: str = "pickle",
) -> list[WalkResult]:
    """Scan every pickle in [start, end): the first, then whatever follows its STOP (fail closed).

    A loader reads one pickle and ignores the rest, but code that calls `load()` in a loop (or a second
    tool) runs the rest too, so data after STOP is walked as further pickles and reported.
    """
    walker = PickleWalker(stream, ctx, torchscript=torchscript)
    walks: list[WalkResult] = []
    offset = start
    extra = 0
    while offset < end:
        ctx.check()
        walk = walker.walk(offset, end)
        walks.append(walk)
        if offset == start:
            report_walk(ctx, stream, walk, what=what)
        else:
            extra += 1
            report_imports(ctx, stream, walk)
            if extra == 1:
                if walk.stopped:
                    msg = (
                        f"another pickle follows the first STOP at offset {offset}: pickle.load reads only "
                        "the first, but anything that loads again (or parses differently) runs it"
                    )
                else:
                    msg = f"{end - offset} bytes of data after STOP at offset {offset}"
                ctx.add(RuleId.MALFORMED, Severity.HIGH, msg, offset=offset, trailing_bytes=end - offset)
        if not walk.stopped or walk.end <= offset:
            break
        offset = walk.end
        if extra >= MAX_TRAILING_PICKLES:
            ctx.incomplete(
                f"more than {MAX_TRAILING_PICKLES} pickles in one stream; the rest not scanned", offset=offset
            )
            break
    if extra > 1:
        ctx.set_metadata("pickles_in_stream", extra + 1)
    return walks


# --------------------------------------------------------------------------------------------------
# Sniffing and registration
# --------------------------------------------------------------------------------------------------


def looks_like_pickle(head: bytes) -> bool:
    """Protocol 2+: PROTO then a version. Protocol 0/1: a valid first opcode and a clean trial walk."""
    if len(head) >= 2 and head[0] == 0x80:
        return 2 <= head[1] <= 5 and (len(head) == 2 or head[2] in VALID_OPCODES)
    if not head or head[0] not in VALID_OPCODES or head[0] == 0x2E:
        return False
    from modelshield.scanning.registry import Limits

    probe = ScanContext(limits=Limits(), location="<sniff>")
    probe.shared.deadline = time.monotonic() + 5.0
    walk = PickleWalker(io.BytesIO(head), probe).walk(0, len(head), trial=True)
    if walk.stopped:
        return walk.end >= 2
    # running off the end of the sniff window is fine
    cut_short = walk.error is not None and ("truncated" in walk.error or "without STOP" in walk.error)
    if cut_short and (walk.error_offset or 0) >= min(len(head), 256):
        return True
    # a prefix that imports and calls something runs in pickle.load before the loader trips over the bad
    # byte that follows: that is a pickle payload, not text
    return any(record.called_by for record in walk.imports.values())


def _sniff_pickle(head: bytes, stream: BinaryIO) -> bool:
    return looks_like_pickle(head)


@register(Format.PICKLE, sniff=_sniff_pickle, priority=30)
def scan_pickle(stream: BinaryIO, ctx: ScanContext) -> None:
    """A bare pickle stream (also joblib files, which are pickles with array bytes inline)."""
    size = stream_size(stream)
    scan_pickle_region(stream, ctx, 0, size)


__all__ = [
    "FULL",
    "VALID_OPCODES",
    "Call",
    "Global",
    "ImportRecord",
    "PickleWalker",
    "WalkAbort",
    "WalkResult",
    "as_tuple",
    "decompile_excerpt",
    "is_full",
    "looks_like_pickle",
    "register_build_hook",
    "report_imports",
    "report_walk",
    "scan_pickle_region",
]
