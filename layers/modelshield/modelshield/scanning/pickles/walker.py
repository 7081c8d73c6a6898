"""The streaming opcode walker: reads a pickle in large chunks and keeps a symbolic stack and memo.

Why our own walker: `pickletools.genops` (and the scanners built on it) is slow on opcode-dense files
and stops at the first STOP or the first opcode it dislikes, which is exactly where attackers hide the
second half of a payload. This walker reads the stream in large chunks, dispatches on opcode bytes,
skips long byte/string payloads by seeking, and keeps a *symbolic* stack and memo (`values.py`). That
is enough to

- resolve STACK_GLOBAL through the memo and the stack the way the unpickler would (MARK fences, DUP,
  MEMOIZE numbering, PUT/GET), or say honestly that it could not (fail closed);
- see who calls an import (REDUCE, BUILD reaching __setstate__, OBJ/INST, NEWOBJ/NEWOBJ_EX);
- keep going where loaders keep going: data after STOP, several pickles in one stream, FRAME lengths
  that lie, protocol 5 out-of-band buffers; and to stop and say so where they would stop.

How it stays fast: the opcodes that make up dense data (ints, short strings, memo traffic, empty
containers, MARK/TUPLE/APPENDS/SETITEM(S)) are handled inline in one loop over a bytes buffer, with
runs fused (a run of BININTs, a string and its MEMOIZE, a container and its MEMOIZE, a tuple of inert
scalars matched in C by `opcodes.FAST_TUPLE`). Every other opcode goes through a table of small
handlers (`handlers.py`): those are the ones that import, call, build or stop, and they are rare.
Buffers are refilled with `opcodes.GUARD` bytes of look-ahead, so no handler waits for more data.

Memory stays bounded whatever the file size: payloads are skipped, containers are tracked only while
small, the memo keeps only values that can matter later (strings, globals, calls of interest), memo key
numbering is kept as a dense counter plus a small sparse set, and stack/memo limits from `Limits` turn
into MS-SCAN-INCOMPLETE findings.

Nothing here imports or calls anything named in the pickle.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from modelshield.models import RuleId, Severity
from modelshield.scanning.pickles import opcodes
from modelshield.scanning.pickles.handlers import HANDLERS
from modelshield.scanning.pickles.opcodes import CHUNK, GUARD, MAX_ITEMS, MAX_LIST_ITEMS, TUPLE_START, i4, u4
from modelshield.scanning.pickles.state import Walk
from modelshield.scanning.pickles.values import (
    FULL,
    KEY_TYPES,
    PLAIN,
    Call,
    Global,
    WalkAbort,
    WalkResult,
    extend_list,
    no_mark,
    note_call,
    set_item,
    underflow,
)
from modelshield.scanning.registry import ScanContext

FAST_TUPLE_PATIENCE = 32  # MARKs in a row that did not start an inert tuple before we stop trying
FAST_TUPLE_RETRY = 1024  # ... and how many MARKs later we try again


def _inline_kinds() -> bytes:
    """Opcode byte -> which inline case of the hot loop handles it (0: a handler from HANDLERS)."""
    kinds = bytearray(256)
    cases = {
        1: b"J\x8cKMhjGN\x88\x89]})\x85\x86\x87s",  # dense data, handled as a run
        2: b"(",  # MARK
        3: b"eu",  # APPENDS / SETITEMS
        4: b"\x94",  # MEMOIZE
        5: b"t",  # TUPLE
        6: b"a",  # APPEND
        7: b"qr",  # BINPUT / LONG_BINPUT
    }
    for kind, ops in cases.items():
        for op in ops:
            kinds[op] = kind
    return bytes(kinds)


INLINE_KIND = _inline_kinds()


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
    def once(self, key: str) -> bool:
        if key in self.notes:
            return False
        self.notes.add(key)
        return True

    def malformed(self, message: str, offset: int, severity: Severity = Severity.HIGH, **detail: Any) -> None:
        self.ctx.add(RuleId.MALFORMED, severity, message, offset=offset, **detail)

    # -- the walk --------------------------------------------------------------------------------
    def walk(self, start: int, end: int, *, trial: bool = False) -> WalkResult:
        """Walk one pickle from `start` until STOP (or an error) without reading past `end`.

        A `trial` walk (the sniffer's) runs no format hooks.
        """
        result = WalkResult(start=start, end=start, stopped=False)
        self.trial = trial
        try:
            self._run(Walk(self, result, end))
        except WalkAbort as stop:
            result.error = str(stop)
            result.error_offset = stop.offset
            result.end = stop.offset
            result.aborted = stop.limit
            if stop.limit:  # a limit, not the file, ended the walk: fail closed
                self.ctx.incomplete(f"pickle walk stopped: {stop}", offset=stop.offset)
        return result

    def fill(self, offset: int, end: int) -> bytes:
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

    def _run(self, w: Walk) -> None:
        """The hot loop: dense-data opcodes inline (most frequent first), the rest through HANDLERS.

        Locals only in here (no closures over loop state): this runs once per opcode."""
        ctx = self.ctx
        fill = self.fill
        end = w.end
        base = w.base
        buf = b""
        pos = 0
        eof = False
        guard = 0
        stack = w.stack
        push = stack.append
        marks = w.marks
        floor = 0
        memo = w.memo
        dense = 0
        slow_memo = False
        max_memo = self.max_memo
        max_stack = self.max_stack
        fast_match = opcodes.FAST_TUPLE.match
        patience = full_patience = FAST_TUPLE_PATIENCE
        skipped, retry_after = 0, FAST_TUPLE_RETRY
        handlers = HANDLERS
        kinds = INLINE_KIND
        tuple_start = TUPLE_START
        plain = PLAIN
        key_types = KEY_TYPES
        bytes_, str_, global_, call_, list_, dict_ = bytes, str, Global, Call, list, dict
        try:
            while True:
                if pos >= guard:
                    if buf and eof:
                        raise WalkAbort("pickle ends without STOP (truncated or cut short)", base + pos)
                    if buf:
                        ctx.check()
                        if len(stack) > max_stack or len(marks) > max_stack:
                            raise WalkAbort(
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
                    w.base, w.eof = base, eof
                    if not buf:
                        raise WalkAbort("pickle ends without STOP (truncated or cut short)", base)
                    continue
                op = buf[pos]
                kind = kinds[op]
                if kind == 1:  # a run of dense data: scalars, short strings, memo GETs, small tuples, SETITEM
                    while True:
                        if op == 0x4A:  # BININT
                            push(i4(buf, pos + 1)[0])
                            pos += 5
                        elif op == 0x8C:  # SHORT_BINUNICODE: raw UTF-8, decoded only if used; often a run
                            while True:
                                stop = pos + 2 + buf[pos + 1]
                                if stop > len(buf):
                                    raise WalkAbort("pickle truncated inside a string", base + pos)
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
                        elif op == 0x4D:  # BININT2
                            push(buf[pos + 1] | buf[pos + 2] << 8)
                            pos += 3
                        elif op == 0x4B:  # BININT1
                            push(buf[pos + 1])
                            pos += 2
                        elif op == 0x5D or op == 0x7D or op == 0x29:  # EMPTY_LIST / _DICT / _TUPLE
                            push([] if op == 0x5D else {} if op == 0x7D else ())
                            pos += 1
                            if pos < guard and buf[pos] == 0x94 and not slow_memo:
                                dense += 1  # containers are never kept in the memo
                                pos += 1
                        elif 0x85 <= op <= 0x87:  # TUPLE1..3, and the MEMOIZE that follows
                            if len(stack) - (op - 0x84) < floor:
                                raise underflow(op, base + pos, marks)
                            if op == 0x86:
                                v = stack.pop()
                                stack[-1] = (stack[-1], v)
                            elif op == 0x85:
                                stack[-1] = (stack[-1],)
                            else:
                                t3 = tuple(stack[-3:])
                                stack[-3:] = (t3,)
                            pos += 1
                            if pos < guard and buf[pos] == 0x94 and not slow_memo:
                                dense += 1  # tuples are never kept in the memo
                                pos += 1
                        elif op == 0x73:  # SETITEM
                            if len(stack) - 3 < floor:
                                raise underflow(op, base + pos, marks)
                            value = stack.pop()
                            key = stack.pop()
                            target = stack[-1]
                            tt = type(target)
                            if tt is dict_:  # set_item(), inline
                                if len(target) >= MAX_ITEMS or type(key) not in key_types:
                                    target[FULL] = True
                                else:
                                    target[key] = value
                            elif tt is global_ or tt is call_:
                                note_call(target, "SETITEM")
                            pos += 1
                        elif op == 0x68 or op == 0x6A:  # BINGET / LONG_BINGET
                            if op == 0x68:
                                k = buf[pos + 1]
                                pos += 2
                            else:
                                k = u4(buf, pos + 1)[0]
                                pos += 5
                            v = memo.get(k)
                            if v is None and k >= dense:
                                v = w.memo_missing(k, base + pos)
                            push(v)
                        elif op == 0x28 and not patience and skipped < retry_after:  # MARK (no inert tuples)
                            skipped += 1
                            floor = len(stack)
                            marks.append(floor)
                            pos += 1

                        elif op == 0x47:  # BINFLOAT
                            push(None)
                            pos += 9
                        elif op == 0x4E:  # NONE
                            push(None)
                            pos += 1
                        elif op == 0x88 or op == 0x89:  # NEWTRUE / NEWFALSE
                            push(op == 0x88)
                            pos += 1
                        else:
                            break
                        if pos >= guard:
                            break
                        op = buf[pos]
                elif kind == 2:  # MARK, or the start of a tuple of inert scalars
                    m = None
                    if buf[pos + 1] in tuple_start and not slow_memo:
                        if patience:  # the regex costs a call: stop trying where it keeps failing
                            m = fast_match(buf, pos)
                            patience = patience - 1 if m is None else full_patience
                        else:
                            skipped += 1
                            if skipped >= retry_after:  # now and then, try again
                                patience, skipped = 1, 0
                    if m is not None:
                        while True:  # records come in runs: take the next ones without leaving here
                            pos2 = m.end()
                            push(bytearray(buf[pos:pos2]))  # a bytearray on the stack = an inert tuple
                            if m.group(1) is not None:
                                dense += 1
                            pos = pos2
                            if pos >= guard or buf[pos] != 0x28 or buf[pos + 1] not in tuple_start:
                                break
                            m = fast_match(buf, pos)
                            if m is None:
                                break
                    else:
                        floor = len(stack)
                        marks.append(floor)
                        pos += 1
                elif kind == 3:  # APPENDS / SETITEMS
                    if not marks:
                        raise no_mark(op, base + pos)
                    m0 = marks.pop()
                    floor = marks[-1] if marks else 0
                    if m0 <= floor:
                        raise underflow(op, base + pos, marks)
                    items = stack[m0:]
                    del stack[m0:]
                    target = stack[-1]
                    tt = type(target)
                    if op == 0x65:
                        if tt is list_:
                            if not target or target[0] is not FULL:  # extend_list(), inline
                                if len(target) + len(items) > MAX_LIST_ITEMS or (
                                    items and (type(items[0]) not in plain or type(items[-1]) not in plain)
                                ):
                                    target.clear()
                                    target.append(FULL)
                                else:
                                    target.extend(items)
                        elif tt is global_ or tt is call_:
                            note_call(target, "APPENDS")
                    else:
                        if len(items) % 2:
                            raise WalkAbort("SETITEMS with an odd number of items", base + pos)
                        if tt is dict_:
                            for i in range(0, len(items), 2):
                                set_item(target, items[i], items[i + 1])
                        elif tt is global_ or tt is call_:
                            note_call(target, "SETITEMS")
                    pos += 1
                elif kind == 4:  # MEMOIZE (after anything the cases above did not fuse it with)
                    if len(stack) <= floor:
                        raise underflow(op, base + pos, marks)
                    v = stack[-1]
                    t = type(v)
                    if slow_memo:
                        w.dense = dense
                        w.memo_put(dense + len(w.sparse), v, base + pos)
                        dense, slow_memo = w.dense, w.slow_memo
                    elif t is bytes_ or t is str_ or t is global_ or (t is call_ and v.keep):
                        if len(memo) < max_memo:
                            memo[dense] = v
                            dense += 1
                        else:
                            w.dense = dense
                            w.memo_put(dense, v, base + pos)
                            dense, slow_memo = w.dense, w.slow_memo
                    else:
                        dense += 1
                    pos += 1
                elif kind == 5:  # TUPLE
                    if not marks:
                        raise no_mark(op, base + pos)
                    m0 = marks.pop()
                    floor = marks[-1] if marks else 0
                    t3 = tuple(stack[m0:]) if len(stack) - m0 <= MAX_ITEMS else None
                    del stack[m0:]
                    push(t3)
                    pos += 1
                elif kind == 6:  # APPEND
                    if len(stack) - 2 < floor:
                        raise underflow(op, base + pos, marks)
                    value = stack.pop()
                    target = stack[-1]
                    tt = type(target)
                    if tt is list_:
                        extend_list(target, [value])
                    elif tt is global_ or tt is call_:
                        note_call(target, "APPEND")
                    pos += 1
                elif kind == 7:  # BINPUT / LONG_BINPUT (protocols 1-3 memoize this way)
                    if len(stack) <= floor:
                        raise underflow(op, base + pos, marks)
                    k = buf[pos + 1] if op == 0x71 else u4(buf, pos + 1)[0]
                    w.dense = dense
                    w.memo_put(k, stack[-1], base + pos)
                    dense, slow_memo = w.dense, w.slow_memo
                    pos += 2 if op == 0x71 else 5
                else:  # everything that imports, calls, builds, stops, or is rare: one handler each
                    w.floor, w.dense = floor, dense
                    pos = handlers[op](w, buf, pos)
                    floor, dense, slow_memo = w.floor, w.dense, w.slow_memo
                    if w.done:
                        return
        except (IndexError, struct.error):
            if not eof:
                raise
            raise WalkAbort("pickle truncated inside an opcode argument", base + pos) from None
