"""Pickle scanning without unpickling: the opcode table, a streaming walker, the report, the scanner.

- `opcodes`  the byte format: opcode names and argument decoding, nothing else;
- `values`   the symbolic stack/memo values and what one walk found (`WalkResult`);
- `state`    the state one walk shares with its opcode handlers, and the BUILD hooks format modules add;
- `walker`   the hot loop (dense-data opcodes inline) and `PickleWalker`;
- `handlers` one small function per other opcode (imports, calls, BUILD, STOP, payloads, text args);
- `report`   walk -> findings (MS-CODE-EXEC / MS-CODE-UNKNOWN / MS-MALFORMED);
- `scanner`  every pickle in a stream, the sniffer, and the registered PICKLE scanner.
Which globals are safe is decided in `scanning/pickle_globals.py`. Nothing here imports or calls anything
named in a pickle.
"""

from __future__ import annotations

from modelshield.scanning.pickles.opcodes import CHUNK, VALID_OPCODES
from modelshield.scanning.pickles.report import decompile_excerpt, report_imports, report_walk
from modelshield.scanning.pickles.scanner import looks_like_pickle, scan_pickle, scan_pickle_region
from modelshield.scanning.pickles.state import register_build_hook
from modelshield.scanning.pickles.values import (
    FULL,
    Call,
    Global,
    ImportRecord,
    WalkAbort,
    WalkResult,
    as_text,
    as_tuple,
    is_full,
)
from modelshield.scanning.pickles.walker import PickleWalker

__all__ = [
    "CHUNK",
    "FULL",
    "VALID_OPCODES",
    "Call",
    "Global",
    "ImportRecord",
    "PickleWalker",
    "WalkAbort",
    "WalkResult",
    "as_text",
    "as_tuple",
    "decompile_excerpt",
    "is_full",
    "looks_like_pickle",
    "register_build_hook",
    "report_imports",
    "report_walk",
    "scan_pickle",
    "scan_pickle_region",
]
