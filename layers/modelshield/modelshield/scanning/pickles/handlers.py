"""One small handler per opcode that the hot loop does not inline: imports, calls, BUILD, STOP, FRAME,
payloads, protocol 0 text arguments and the rare container opcodes.

A handler is `(walk, buf, pos) -> pos`: `buf[pos]` is its opcode, it returns the buffer position of the
next opcode. A position past the buffer means "continue there" (the loop refills from that offset, so a
payload is skipped without being read). The loop guarantees `opcodes.GUARD` bytes after `pos` unless the
buffer ends at EOF, so a handler that runs off the buffer has found a truncated pickle. Handlers raise
`WalkAbort` where the real unpickler would fail, and set `walk.done` at STOP.
"""

from __future__ import annotations

import copyreg
from typing import Any

from modelshield.models import RuleId, Severity
from modelshield.scanning.pickle_globals import GlobalJudgement, GlobalVerdict, judge_global
from modelshield.scanning.pickles.opcodes import (
    CHUNK,
    MAX_ITEMS,
    MAX_LINE,
    MAX_LIST_ITEMS,
    MAX_SHORT,
    OPCODE_NAMES,
    PAYLOAD_OPS,
    TEXT_OPS,
    i4,
    parse_int_line,
    string_line,
    u2,
    u8,
)
from modelshield.scanning.pickles.state import BUILD_HOOKS, Handler, Walk
from modelshield.scanning.pickles.values import (
    Call,
    Global,
    ImportRecord,
    Opaque,
    WalkAbort,
    as_str,
    extend_list,
    note_call,
    set_item,
    underflow,
)

MAX_DISTINCT_GLOBALS = 10_000  # distinct imports tracked in one pickle before the walk gives up


# -- imports ----------------------------------------------------------------------------------------------
def import_global(w: Walk, module: str, name: str, opcode: str, offset: int) -> Global:
    """Judge an import and record it once per pickle (counting repeats)."""
    judgement = judge_global(module, name, torchscript=w.walker.torchscript)
    imports = w.result.imports
    record = imports.get(judgement.name)
    if record is None:
        if len(imports) >= MAX_DISTINCT_GLOBALS:
            raise WalkAbort(
                f"more than {MAX_DISTINCT_GLOBALS} distinct globals in one pickle", offset, limit=True
            )
        record = ImportRecord(module, name, opcode, offset, judgement)
        imports[judgement.name] = record
    else:
        record.count += 1
    return Global(module, name, record)


def unresolved_global(w: Walk, what: str, offset: int, opcode: str) -> Global:
    """A dynamic import we could not trace to literal strings: malformed and unknown (fail closed)."""
    w.walker.malformed(
        f"{opcode} with {what}: the imported name is built dynamically and could not be resolved",
        offset,
        opcode=opcode,
    )
    judgement = GlobalJudgement(GlobalVerdict.UNKNOWN, f"<unresolved {opcode}>", what)
    record = ImportRecord("<unresolved>", what, opcode, offset, judgement)
    if len(w.result.imports) < MAX_DISTINCT_GLOBALS:
        w.result.imports[f"<unresolved@{offset}>"] = record
    return Global("<unresolved>", what, record)


def extension_global(w: Walk, code: int, opcode: str, offset: int) -> Global:
    """EXT1/2/4 name a global through the copyreg registry of the *loading* process."""
    known = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
    if known is not None:
        return import_global(w, known[0], known[1], opcode, offset)
    key = f"<ext {code}>"
    record = w.result.imports.get(key)
    if record is None:
        judgement = GlobalJudgement(
            GlobalVerdict.UNKNOWN,
            f"<extension code {code}>",
            "copyreg extension code: the global it names is registered in the loading process, "
            "not in the file, so it cannot be judged",
        )
        record = ImportRecord("<copyreg extension>", str(code), opcode, offset, judgement)
        w.result.imports[key] = record
    return Global("<copyreg extension>", str(code), record)


def _line(w: Walk, buf: bytes, at: int) -> tuple[bytes, int]:
    """The newline-terminated argument at buf[at]: (text, position after it); (b"", -1) when it is
    longer than MAX_LINE."""
    nl = buf.find(b"\n", at, at + MAX_LINE + 1)
    if nl >= 0:
        return buf[at:nl], nl + 1
    if len(buf) - at <= MAX_LINE:  # only at EOF (the loop keeps GUARD bytes ahead otherwise)
        raise WalkAbort("pickle truncated inside a text argument", w.base + at)
    return b"", -1


def _skip_line(w: Walk, at_abs: int) -> int:
    """Skip a text argument longer than MAX_LINE; return the offset after its newline."""
    walker, offset = w.walker, at_abs
    while offset < w.end:
        walker.ctx.check()
        walker.stream.seek(offset)
        chunk = walker.stream.read(min(CHUNK, w.end - offset))
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl >= 0:
            return offset + nl + 1
        offset += len(chunk)
    raise WalkAbort("pickle truncated inside a text argument", at_abs)


def op_global(w: Walk, buf: bytes, pos: int) -> int:
    """GLOBAL / INST: "module\\nname\\n"; INST also calls it with the items above its MARK."""
    op = buf[pos]
    opname = OPCODE_NAMES[op]
    mod_raw, after = _line(w, buf, pos + 1)
    name_raw, after2 = _line(w, buf, after) if after >= 0 else (b"", -1)
    if after < 0 or after2 < 0:
        raise WalkAbort(f"{opname} argument longer than {MAX_LINE} bytes", w.base + pos)
    try:
        module, name = mod_raw.decode("utf-8"), name_raw.decode("utf-8")
    except UnicodeDecodeError:
        module, name = mod_raw.decode("latin-1"), name_raw.decode("latin-1")
        w.walker.malformed(f"{opname} module/name are not UTF-8", w.base + pos)
    g = import_global(w, module, name, opname, w.base + pos)
    if op == 0x69:  # INST
        args = w.pop_mark(op, w.base + pos)
        g.record.called("INST")  # type: ignore[union-attr]
        w.stack.append(w.make_call(g, tuple(args) if len(args) <= MAX_ITEMS else None))
    else:
        w.stack.append(g)
    return after2


def op_stack_global(w: Walk, buf: bytes, pos: int) -> int:
    """STACK_GLOBAL: module and name are the two top stack items, traced through the memo."""
    w.need(2, 0x93, w.base + pos)
    name_v = w.stack.pop()
    module_v = w.stack.pop()
    name, module = as_str(name_v), as_str(module_v)
    if module is not None and name is not None:
        w.stack.append(import_global(w, module, name, "STACK_GLOBAL", w.base + pos))
    else:
        what = "a module/name that are not literal strings traced through the stack and memo"
        if type(module_v) is Opaque or type(name_v) is Opaque:
            what = "a module/name string too long to track"
        w.stack.append(unresolved_global(w, what, w.base + pos, "STACK_GLOBAL"))
    return pos + 1


def op_ext(w: Walk, buf: bytes, pos: int) -> int:
    """EXT1 / EXT2 / EXT4: a global by copyreg extension code."""
    op = buf[pos]
    if op == 0x82:
        code, width = buf[pos + 1], 1
    elif op == 0x83:
        code, width = u2(buf, pos + 1)[0], 2
    else:
        code, width = i4(buf, pos + 1)[0], 4
    w.stack.append(extension_global(w, code, OPCODE_NAMES[op], w.base + pos))
    return pos + 1 + width


# -- calls ------------------------------------------------------------------------------------------------
def op_reduce(w: Walk, buf: bytes, pos: int) -> int:
    """REDUCE / NEWOBJ: callable, args -> result."""
    op = buf[pos]
    w.need(2, op, w.base + pos)
    args = w.stack.pop()
    func = w.stack.pop()
    note_call(func, OPCODE_NAMES[op])
    w.stack.append(w.make_call(func, args))
    return pos + 1


def op_newobj_ex(w: Walk, buf: bytes, pos: int) -> int:
    w.need(3, 0x92, w.base + pos)
    kwargs = w.stack.pop()
    args = w.stack.pop()
    cls = w.stack.pop()
    note_call(cls, "NEWOBJ_EX")
    w.stack.append(w.make_call(cls, (args, kwargs)))
    return pos + 1


def op_obj(w: Walk, buf: bytes, pos: int) -> int:
    """OBJ: MARK cls args... -> cls(*args)."""
    items = w.pop_mark(0x6F, w.base + pos)
    if not items:
        raise WalkAbort("OBJ without a class after its MARK: a real unpickler fails here", w.base + pos)
    note_call(items[0], "OBJ")
    w.stack.append(w.make_call(items[0], tuple(items[1:]) if len(items) <= MAX_ITEMS else None))
    return pos + 1


def op_build(w: Walk, buf: bytes, pos: int) -> int:
    """BUILD: obj.__setstate__(state) or attribute updates; format hooks act here (joblib arrays)."""
    w.need(2, 0x62, w.base + pos)
    state = w.stack.pop()
    target = w.stack[-1]
    if type(target) is Call:
        target.state = state
        note_call(target, "BUILD")
        gname = target.global_name
        hook = BUILD_HOOKS.get(gname) if gname is not None and not w.walker.trial else None
        if hook is not None:
            resume = hook(w.walker, target, w.base + pos + 1, w.end)
            w.stack[-1] = None  # the loader replaces the placeholder (e.g. by the array)
            return resume - w.base
    elif type(target) is Global:
        _build_on_global(w, target, w.base + pos)
    return pos + 1


def _build_on_global(w: Walk, target: Global, at: int) -> None:
    if target.record is not None:
        target.record.called("BUILD on the global itself")
    if w.walker.once(f"build-global-{at}"):
        w.walker.ctx.add(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"BUILD sets attributes on the imported global {target.module}.{target.name} itself "
            "(monkey-patching code the loader will run)",
            offset=at,
            opcode="BUILD",
            **{"global": f"{target.module}.{target.name}"},
        )


# -- framing and the end ----------------------------------------------------------------------------------
def op_stop(w: Walk, buf: bytes, pos: int) -> int:
    if len(w.stack) <= w.floor:
        raise underflow(0x2E, w.base + pos, w.marks)
    result = w.result
    result.value = w.stack[-1]
    result.stopped = True
    result.end = w.base + pos + 1
    if w.frame_end > result.end and w.walker.once(f"frame-stop-{result.start}"):
        w.walker.malformed(
            "STOP comes before the end of the current FRAME: the rest of the frame is "
            "data a loader never reads",
            w.base + pos,
            Severity.MEDIUM,
        )
    w.done = True
    return pos + 1


def op_proto(w: Walk, buf: bytes, pos: int) -> int:
    proto = buf[pos + 1]
    if proto > 5 and w.walker.once(f"proto-{w.result.start}"):
        w.walker.malformed(f"unsupported pickle protocol {proto}", w.base + pos)
    return pos + 2


def op_frame(w: Walk, buf: bytes, pos: int) -> int:
    """FRAME: a length hint; the C unpickler reads on across frame ends, so lies are only reported."""
    n = u8(buf, pos + 1)[0]
    here = w.base + pos
    start = w.result.start
    if here < w.frame_end and w.walker.once(f"frame-overlap-{start}"):
        w.walker.malformed(
            "FRAME starts inside the previous frame: the C and Python unpicklers read "
            "this stream differently",
            here,
        )
    if here + 9 + n > w.end and w.walker.once(f"frame-long-{start}"):
        w.walker.malformed(
            f"FRAME declares {n} bytes, beyond the end of the data: loaders disagree "
            "on where this pickle ends",
            here,
        )
    w.frame_end = here + 9 + n
    return pos + 9


def op_next_buffer(w: Walk, buf: bytes, pos: int) -> int:
    if w.walker.once(f"oob-{w.result.start}"):
        w.walker.malformed(
            "protocol 5 out-of-band buffer: its bytes are not in this file (a plain "
            "loader fails here; one given buffers fills them from elsewhere)",
            w.base + pos,
            Severity.MEDIUM,
        )
    w.stack.append(None)
    return pos + 1


def op_readonly_buffer(w: Walk, buf: bytes, pos: int) -> int:
    if len(w.stack) <= w.floor:
        raise underflow(0x98, w.base + pos, w.marks)
    return pos + 1


# -- payloads ---------------------------------------------------------------------------------------------
def op_payload(w: Walk, buf: bytes, pos: int) -> int:
    """BINUNICODE(8), BINSTRING, BINBYTES(8), BYTEARRAY8: short text is kept, the rest skipped unread."""
    op = buf[pos]
    hdr, read_length, textual = PAYLOAD_OPS[op]
    n = read_length(buf, pos + 1)[0]
    if n < 0:
        raise WalkAbort(f"{OPCODE_NAMES[op]} with a negative length", w.base + pos)
    stop = pos + hdr + n
    if w.base + stop > w.end:
        raise WalkAbort(
            f"{OPCODE_NAMES[op]} declares {n} bytes but only {w.end - w.base - pos - hdr} "
            "remain: the pickle is truncated or lies about a length",
            w.base + pos,
            limit=True,
        )
    if textual and n <= MAX_SHORT:
        if stop > len(buf):  # only when the stream is shorter than it said
            raise WalkAbort("pickle truncated inside a string", w.base + pos)
        raw = buf[pos + hdr : stop]
        w.stack.append(raw.decode("latin-1") if op == 0x54 else raw)
    else:
        w.stack.append(Opaque(f"a string of {n} bytes") if textual else None)
    return stop  # past the buffer: the loop seeks there without reading the payload


def op_short_binbytes(w: Walk, buf: bytes, pos: int) -> int:
    """SHORT_BINBYTES / SHORT_BINSTRING (the latter is text: it may feed STACK_GLOBAL)."""
    stop = pos + 2 + buf[pos + 1]
    if stop > len(buf):
        raise WalkAbort("pickle truncated inside a string", w.base + pos)
    w.stack.append(buf[pos + 2 : stop].decode("latin-1") if buf[pos] == 0x55 else None)
    return stop


def op_long1(w: Walk, buf: bytes, pos: int) -> int:
    n = buf[pos + 1]
    if pos + 2 + n > len(buf):
        raise WalkAbort("pickle truncated inside LONG1", w.base + pos)
    w.stack.append(int.from_bytes(buf[pos + 2 : pos + 2 + n], "little", signed=True) if n <= 16 else None)
    return pos + 2 + n


def op_long4(w: Walk, buf: bytes, pos: int) -> int:
    n = i4(buf, pos + 1)[0]
    if n < 0:
        raise WalkAbort("LONG4 with a negative length", w.base + pos)
    stop = pos + 5 + n
    if w.base + stop > w.end:
        raise WalkAbort("pickle truncated inside LONG4", w.base + pos)
    w.stack.append(None)
    return stop


# -- protocol 0 text arguments ----------------------------------------------------------------------------
def op_text(w: Walk, buf: bytes, pos: int) -> int:
    """INT LONG FLOAT STRING UNICODE PERSID GET PUT: a newline-terminated argument each."""
    op = buf[pos]
    raw, after = _line(w, buf, pos + 1)
    stack = w.stack
    if after < 0:  # longer than MAX_LINE: only data opcodes may be that long
        if op in (0x67, 0x70):
            raise WalkAbort(f"{OPCODE_NAMES[op]} index longer than {MAX_LINE} bytes", w.base + pos)
        stack.append(Opaque("a long text argument"))
        return _skip_line(w, w.base + pos + 1) - w.base
    if op == 0x49 or op == 0x4C:  # INT / LONG
        stack.append(parse_int_line(raw))
    elif op == 0x46:  # FLOAT
        stack.append(None)
    elif op == 0x53:  # STRING
        s = string_line(raw)
        if s is None:
            raise WalkAbort("STRING argument is not quoted: a real unpickler fails here", w.base + pos)
        stack.append(s if len(s) <= MAX_SHORT else Opaque("a long string"))
    elif op == 0x56:  # UNICODE
        s = raw.decode("raw_unicode_escape")
        stack.append(s if len(s) <= MAX_SHORT else Opaque("a long string"))
    elif op == 0x50:  # PERSID
        if len(w.result.persistent_ids) < MAX_LIST_ITEMS:
            w.result.persistent_ids.append(raw[:MAX_SHORT])
        stack.append(None)
    else:  # GET / PUT
        idx = parse_int_line(raw)
        if type(idx) is not int:
            raise WalkAbort(f"{OPCODE_NAMES[op]} index is not an integer", w.base + pos)
        if op == 0x67:
            v = w.memo.get(idx)
            stack.append(v if v is not None or 0 <= idx < w.dense else w.memo_missing(idx, w.base + pos))
        else:
            if len(stack) <= w.floor:
                raise underflow(op, w.base + pos, w.marks)
            w.memo_put(idx, stack[-1], w.base + pos)
    return after


def op_binpersid(w: Walk, buf: bytes, pos: int) -> int:
    if len(w.stack) <= w.floor:
        raise underflow(0x51, w.base + pos, w.marks)
    pid = w.stack.pop()
    if len(w.result.persistent_ids) < MAX_LIST_ITEMS:
        w.result.persistent_ids.append(pid)
    w.stack.append(None)
    return pos + 1


# -- the rarer stack and container opcodes ----------------------------------------------------------------
def op_list_dict(w: Walk, buf: bytes, pos: int) -> int:
    """LIST / DICT: the items above the MARK become one container."""
    op = buf[pos]
    items = w.pop_mark(op, w.base + pos)
    if op == 0x6C:
        lst: list[Any] = []
        extend_list(lst, items)
        w.stack.append(lst)
    else:
        if len(items) % 2:
            raise WalkAbort("DICT with an odd number of items", w.base + pos)
        d: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            set_item(d, items[i], items[i + 1])
        w.stack.append(d)
    return pos + 1


def op_set(w: Walk, buf: bytes, pos: int) -> int:
    """ADDITEMS (calls the target's add) / FROZENSET (an untracked value)."""
    op = buf[pos]
    w.pop_mark(op, w.base + pos)
    if op == 0x91:
        w.stack.append(None)
    elif len(w.stack) <= w.floor:
        raise underflow(op, w.base + pos, w.marks)
    else:
        note_call(w.stack[-1], "ADDITEMS")
    return pos + 1


def op_empty_set(w: Walk, buf: bytes, pos: int) -> int:
    w.stack.append(None)
    return pos + 1


def op_pop(w: Walk, buf: bytes, pos: int) -> int:
    """POP (pops the MARK itself when nothing is above it) / POP_MARK."""
    if buf[pos] == 0x30 and len(w.stack) > w.floor:
        w.stack.pop()
    else:
        w.pop_mark(buf[pos], w.base + pos)
    return pos + 1


def op_dup(w: Walk, buf: bytes, pos: int) -> int:
    if len(w.stack) <= w.floor:
        raise underflow(0x32, w.base + pos, w.marks)
    w.stack.append(w.stack[-1])
    return pos + 1


def op_invalid(w: Walk, buf: bytes, pos: int) -> int:
    raise WalkAbort(f"invalid opcode 0x{buf[pos]:02x}: a real unpickler stops here", w.base + pos)


def _table() -> list[Handler]:
    """Opcode byte -> handler; bytes that are no opcode stop the walk. (The loop inlines the
    dense-data opcodes, so their entries are never used.)"""
    table: list[Handler] = [op_invalid] * 256
    by_op: dict[int, Handler] = {
        0x2E: op_stop, 0x80: op_proto, 0x95: op_frame,
        0x63: op_global, 0x69: op_global, 0x93: op_stack_global, 0x82: op_ext, 0x83: op_ext, 0x84: op_ext,
        0x52: op_reduce, 0x81: op_reduce, 0x92: op_newobj_ex, 0x6F: op_obj, 0x62: op_build,
        0x43: op_short_binbytes, 0x55: op_short_binbytes, 0x8A: op_long1, 0x8B: op_long4,
        0x51: op_binpersid, 0x6C: op_list_dict, 0x64: op_list_dict, 0x90: op_set, 0x91: op_set,
        0x8F: op_empty_set, 0x30: op_pop, 0x31: op_pop, 0x32: op_dup,
        0x97: op_next_buffer, 0x98: op_readonly_buffer,
    }  # fmt: skip
    by_op.update(dict.fromkeys(PAYLOAD_OPS, op_payload))
    by_op.update(dict.fromkeys(TEXT_OPS, op_text))
    for op, handler in by_op.items():
        table[op] = handler
    return table


HANDLERS: list[Handler] = _table()
