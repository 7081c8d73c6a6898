"""What the hot loop and the opcode handlers share: the state of one walk, and the BUILD hooks.

Format modules (joblib, PyTorch) act on particular objects through BUILD hooks; the walker only knows
that a hook exists for a qualified name. `Walker` is the little of the walker that handlers and hooks use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from modelshield.models import Severity
from modelshield.scanning.pickle_globals import GlobalVerdict
from modelshield.scanning.pickles.values import (
    Call,
    Global,
    WalkAbort,
    WalkResult,
    no_mark,
    note_passed,
    underflow,
)
from modelshield.scanning.registry import ScanContext


class Walker(Protocol):
    """The walker as handlers and hooks see it."""

    stream: BinaryIO
    ctx: ScanContext
    torchscript: bool
    trial: bool
    max_memo: int

    def once(self, key: str) -> bool: ...

    def malformed(self, message: str, offset: int, severity: Severity = ..., **detail: Any) -> None: ...


# A BUILD hook gets the walker, the object BUILD just set state on, and the offset after the BUILD
# opcode; it returns the offset where opcodes resume (joblib writes array bytes right there).
BuildHook = Callable[["Walker", Call, int, int], int]
BUILD_HOOKS: dict[str, BuildHook] = {}
# Calls whose results are kept in the memo because a hook or the dtype logic needs them later.
KEEP_CALLS: set[str] = {"numpy.dtype"}


def register_build_hook(qualified_name: str, hook: BuildHook) -> None:
    """Let a format module act when BUILD sets the state of an instance of `qualified_name`."""
    BUILD_HOOKS[qualified_name] = hook
    KEEP_CALLS.add(qualified_name)


class Walk:
    """The state of one walk that the opcode handlers share with the hot loop.

    The loop keeps its hottest variables (`floor`, `dense`) in locals and writes them here before a
    handler runs and reads them back after, so handlers stay small functions of (walk, buffer, pos)."""

    __slots__ = (
        "base",
        "dense",
        "done",
        "end",
        "eof",
        "floor",
        "frame_end",
        "marks",
        "max_memo",
        "memo",
        "memo_full",
        "result",
        "slow_memo",
        "sparse",
        "stack",
        "walker",
    )

    def __init__(self, walker: Walker, result: WalkResult, end: int) -> None:
        self.walker = walker
        self.result = result
        self.end = end
        self.base = result.start  # absolute offset of buffer position 0
        self.eof = False
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.floor = 0  # stack items below the innermost MARK are out of reach (the unpickler's fence)
        self.memo: dict[int, Any] = {}
        self.sparse: set[int] = set()
        self.memo_full = False
        self.dense = 0  # memo keys 0..dense-1 exist; `sparse` holds any others
        self.slow_memo = False  # sparse keys exist or the memo is full: take the careful path
        self.max_memo = walker.max_memo
        self.frame_end = -1
        self.done = False

    # -- the memo, the careful way -----------------------------------------------------------------
    def memo_put(self, key: int, value: Any, at: int) -> None:
        """PUT/MEMOIZE with every check; updates `dense` and `slow_memo`."""
        sparse, memo, dense = self.sparse, self.memo, self.dense
        if key < 0:
            raise WalkAbort("negative memo index", at)
        if key >= dense and key not in sparse:
            if key == dense:
                dense += 1
                while dense in sparse:
                    sparse.discard(dense)
                    dense += 1
            else:
                if len(sparse) >= self.max_memo:
                    raise WalkAbort(f"memo over {self.max_memo} scattered entries", at, limit=True)
                sparse.add(key)
        self.dense = dense
        t = type(value)
        if t is bytes or t is str or t is Global or (t is Call and value.keep):
            if len(memo) >= self.max_memo and key not in memo:
                if not self.memo_full:
                    # Past the limit new values are untracked (opaque), which keeps memory bounded without
                    # giving up: every GLOBAL/STACK_GLOBAL import is still judged when it executes, and one
                    # whose module or name comes from an untracked entry is unresolvable, which is itself
                    # a blocking finding. So a big benign pickle stays clean and a hidden import does not.
                    self.memo_full = True
                    self.walker.ctx.set_metadata("pickle_memo_untracked_from_offset", at)
                memo.pop(key, None)
            else:
                memo[key] = value
        else:
            memo.pop(key, None)
        self.slow_memo = bool(sparse) or self.memo_full

    def memo_missing(self, key: int, at: int) -> None:
        """A GET of a key holding nothing we track: opaque (None) if the key exists, else the loader fails."""
        if key in self.sparse or self.memo_full:
            return None
        raise WalkAbort(f"memo index {key} read before it was written: a real unpickler fails here", at)

    def pop_mark(self, op: int, at: int) -> list[Any]:
        """The items above the innermost MARK (removed from the stack); moves the fence down."""
        marks, stack = self.marks, self.stack
        if not marks:
            raise no_mark(op, at)
        m = marks.pop()
        items = stack[m:]
        del stack[m:]
        self.floor = marks[-1] if marks else 0
        return items

    def need(self, n: int, op: int, at: int) -> None:
        """Raise the unpickler's underflow unless `n` items sit above the MARK fence."""
        if len(self.stack) - n < self.floor:
            raise underflow(op, at, self.marks)

    def make_call(self, func: Any, args: Any) -> Call:
        if type(args) is tuple and args:
            note_passed(func, args)
        keep = False
        if type(func) is Global and func.record is not None:
            keep = (
                func.record.judgement.verdict is not GlobalVerdict.ALLOW
                or func.record.qualified in KEEP_CALLS
            )
        return Call(func, args, keep)


Handler = Callable[[Walk, bytes, int], int]
