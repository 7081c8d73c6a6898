"""The symbolic values a walk keeps on its stack and in its memo, and what one walk found.

Only what can matter later is modelled: short strings (they may feed STACK_GLOBAL), small ints, tuples,
lists and dicts (shapes, dtype states, persistent ids), imported globals and the results of calling
them. Everything else is `None` or `Opaque`. Lists and dicts are plain `list`/`dict` objects (cheap to
make on dense pickles) and stop being tracked when they grow or hold more than plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelshield.scanning.pickle_globals import GlobalJudgement, GlobalVerdict
from modelshield.scanning.pickles.opcodes import MAX_ITEMS, MAX_LIST_ITEMS, OPCODE_NAMES, decode_fast_tuple


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

    A dropped list holds just this sentinel, a dropped dict has it as a key."""

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
        return [r for r in self.imports.values() if r.judgement.final(r.called_by)[0] is GlobalVerdict.DENY]


class WalkAbort(Exception):
    """The walk cannot continue (the real loader would have stopped here too), or a limit was hit.

    Raised inside the walker and by format hooks; the message becomes the walk's error."""

    def __init__(self, message: str, offset: int, *, limit: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.limit = limit


def underflow(op: int, at: int, marks: list[int]) -> WalkAbort:
    below = " (items below the MARK are out of reach)" if marks else ""
    return WalkAbort(
        f"stack underflow at {OPCODE_NAMES.get(op, hex(op))}{below}: a real unpickler fails here", at
    )


def no_mark(op: int, at: int) -> WalkAbort:
    return WalkAbort(f"{OPCODE_NAMES[op]} without a MARK: a real unpickler fails here", at)


def note_call(obj: Any, how: str) -> None:
    """Note who calls an import: the callable itself, or the instance whose methods run."""
    func = obj.func if type(obj) is Call else obj
    if type(func) is Global and func.record is not None:
        func.record.called(how)


# Callees that only allocate the class they are given (cls.__new__), never call it or its __init__.
NEW_ONLY_CALLEES = frozenset({"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"})


def note_passed(func: Any, args: tuple[Any, ...]) -> None:
    """Globals handed to a call may be called by it (`_rebuild_from_type_v2(func, ...)` runs func):
    note them as called, except the class argument of the copyreg helpers that only allocate it."""
    callee = f"{func.module}.{func.name}" if type(func) is Global else "a call"
    first = 1 if callee in NEW_ONLY_CALLEES else 0
    for i, arg in enumerate(args[:8]):
        for item in arg[:8] if type(arg) is tuple else (arg,):
            if type(item) is Global and item.record is not None and i >= first:
                item.record.called(f"passed to {callee}")


PLAIN = (bytes, str, int, bool)


def extend_list(target: list[Any], items: list[Any]) -> None:
    """Track a list only while it holds plain strings/ints: retaining containers would grow memory
    (and make the cyclic GC crawl) on dense pickles, and nothing needs them."""
    if target and target[0] is FULL:
        return
    # a cheap look at the ends: list contents are hints (legacy torch keys), checked again by users
    if len(target) + len(items) > MAX_LIST_ITEMS or (
        items and (type(items[0]) not in PLAIN or type(items[-1]) not in PLAIN)
    ):
        target.clear()
        target.append(FULL)
    else:
        target.extend(items)


KEY_TYPES = (bytes, str, int, bool, type(None))


def set_item(target: dict[Any, Any], key: Any, value: Any) -> None:
    """Track scalar keys only: hashing a tuple key could walk a DUP-built structure exponentially."""
    if len(target) >= MAX_ITEMS or type(key) not in KEY_TYPES:
        target[FULL] = True
        return
    target[key] = value


def as_text(value: Any) -> str | None:
    """A tracked string value (str, or bytes decoded leniently), else None."""
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return value if type(value) is str else None


def as_str(value: Any) -> str | None:
    """A string value as the unpickler would see it (our raw UTF-8 bytes decoded), else None."""
    if type(value) is str:
        return value
    if type(value) is bytes:
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    return None


def as_tuple(value: Any) -> tuple[Any, ...] | None:
    """A tracked tuple value, whichever path built it."""
    if type(value) is tuple:
        return value
    if type(value) is bytearray:  # the fast path's raw opcodes (nothing else leaves a bytearray)
        return decode_fast_tuple(bytes(value))
    return None


def judgement_unknown(name: str, reason: str) -> GlobalJudgement:
    return GlobalJudgement(GlobalVerdict.UNKNOWN, name, reason)
