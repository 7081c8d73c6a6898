"""The pickle scanner: every pickle in a stream (data after STOP included), and the pickle sniffer."""

from __future__ import annotations

import io
import time
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.pickles.opcodes import VALID_OPCODES
from modelshield.scanning.pickles.report import report_imports, report_walk
from modelshield.scanning.pickles.values import WalkResult
from modelshield.scanning.pickles.walker import PickleWalker
from modelshield.scanning.registry import Limits, ScanContext, register
from modelshield.scanning.streams import stream_size

MAX_TRAILING_PICKLES = 10_000  # extra pickles walked after the first STOP before giving up


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
