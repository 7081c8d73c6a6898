"""Turning one walk into findings: denied imports, unknown imports, and why a walk stopped early.

A denied import is MS-CODE-EXEC with fickling's static decompilation of that pickle attached as an
explanation (fickling only ever reads the bytes; detection never depends on it). An import on neither
list is MS-CODE-UNKNOWN. Every imported name is also recorded in the scan's metadata (`globals`).
"""

from __future__ import annotations

import ast
import contextlib
import io
import threading
from typing import Any, BinaryIO

from modelshield.models import RuleId, Severity
from modelshield.scanning.pickle_globals import GlobalVerdict
from modelshield.scanning.pickles.values import WalkResult
from modelshield.scanning.registry import ScanContext

MAX_DECOMPILE_BYTES = 2 << 20  # fickling only runs on flagged pickles up to this size
MAX_DECOMPILE_CHARS = 2048
MAX_REPORTED_GLOBALS = 1000


def _record_globals(ctx: ScanContext, walk: WalkResult) -> None:
    seen: list[str] = ctx.shared.metadata.setdefault("globals", [])
    for record in walk.imports.values():
        if record.qualified not in seen and len(seen) < MAX_REPORTED_GLOBALS:
            seen.append(record.qualified)


_FICKLING_OUTPUT = threading.Lock()  # redirect_stdout swaps a process-wide object: one swap at a time


def decompile_excerpt(data: bytes) -> str | None:
    """fickling's static decompilation of a flagged pickle into the Python it would run (never executed)."""
    if len(data) > MAX_DECOMPILE_BYTES:
        return None
    try:
        from fickling.fickle import Interpreter, InterpreterLimits, Pickled

        # fickling reports malformed input with bare writes to stdout *and* stderr ("Warning: malformed
        # pickle file ..."); stdout carries `--format json` and SARIF, which must always parse.
        with (
            _FICKLING_OUTPUT,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
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
        verdict, reason = record.judgement.final(record.called_by)
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
            "reason": reason,
        }
        if record.count > 1:
            detail["count"] = record.count
        if verdict is GlobalVerdict.DENY:
            if excerpt:
                detail["decompiled"] = excerpt
            ctx.add(
                RuleId.CODE_EXEC,
                Severity.CRITICAL,
                f"pickle imports {record.qualified} via {record.opcode} ({reason}); {how}",
                offset=record.offset,
                **detail,
            )
        elif verdict is GlobalVerdict.DATA:  # builds data, nobody vouched for the name: a warning
            ctx.add(
                RuleId.DATA_REFERENCE,
                Severity.LOW,
                f"unreviewed data reference: {record.qualified} (via {record.opcode}; {reason}); {how}",
                offset=record.offset,
                **detail,
            )
        else:
            what = (
                f"unknown code: {record.qualified}"
                if not record.qualified.startswith("<")
                else f"dynamic import we could not resolve: {reason}"
            )
            ctx.add(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"{what} (via {record.opcode}; {reason}); {how}",
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
