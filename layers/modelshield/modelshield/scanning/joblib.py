"""joblib files: pickles with numpy array bytes written inline, plain or compressed.

`joblib.dump` pickles each ndarray as a `NumpyArrayWrapper` (subclass, shape, order, dtype, alignment)
and writes the array right after the wrapper's BUILD opcode: one padding-length byte plus padding
(joblib >= 1.2), then the raw bytes; object arrays are a nested pickle instead. `joblib.load` reads them
at that point and resumes unpickling after them. The pickle walker calls our BUILD hook there, so the
array bytes are skipped (or, for object arrays, walked as a pickle) instead of being mistaken for
opcodes or "data after STOP". Where there is no padding byte, `pickle.load` would instead read those
bytes as opcodes, so they are also walked that way (a joblib/pickle polyglot). If the size cannot be
worked out from the symbolic wrapper, the scan stops with a finding (fail closed) rather than guessing.

Compressed joblib files are one compressed stream of that whole file. gzip/bz2/xz/lzma/zlib streams
are recognised by the generic compressed-stream scanner, which hands the decompressed bytes back to
the registry (where this module's pickle handling applies). Two joblib-only containers are handled
here: the pre-0.10 `ZF` zlib file (ZF + hex length header) and lz4 frames (joblib's `compress='lz4'`).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.compressed import BombError, inflate
from modelshield.scanning.numpy_arrays import typestr_itemsize
from modelshield.scanning.pickle_globals import GlobalVerdict
from modelshield.scanning.pickles import (
    Call,
    PickleWalker,
    WalkAbort,
    as_text,
    as_tuple,
    looks_like_pickle,
    register_build_hook,
    report_walk,
    scan_pickle_region,
)
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size

WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
ZFILE_PREFIX = b"ZF"
ZFILE_HEADER = 2 + 19  # "ZF" + hex(length).ljust(19)
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
PLAIN_READING_SLACK = 64 * 1024  # how far past an array a plain-pickle reading is followed
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


def _field(state: Any, name: str) -> Any:
    """A key of the wrapper's state dict (keys are raw UTF-8 bytes or str on the symbolic stack)."""
    if type(state) is not dict:
        return None
    value = state.get(name.encode())
    return state.get(name) if value is None else value


def _dtype_itemsize(dtype: Any) -> tuple[int, bool] | None:
    """From the symbolic `numpy.dtype('f8', False, True)` call plus its BUILD state (elsize for V types)."""
    if type(dtype) is not Call or dtype.global_name != "numpy.dtype":
        return None
    args = as_tuple(dtype.args)
    typestr = as_text(args[0]) if args else None
    if typestr is None:
        return None
    item = typestr_itemsize(typestr)
    state = as_tuple(dtype.state)
    if item is not None and item[0] == 0 and state and len(state) > 5 and type(state[5]) is int:
        item = (state[5], item[1])  # flexible type whose size is in the state
    return item


def _array_hook(walker: PickleWalker, wrapper: Call, offset: int, end: int) -> int:
    """Skip (or walk) the array bytes joblib wrote after this wrapper; return where opcodes resume."""
    ctx = walker.ctx
    if Format.JOBLIB.value not in ctx.shared.formats:
        ctx.shared.formats.append(Format.JOBLIB.value)
    state = wrapper.state
    shape = as_tuple(_field(state, "shape"))
    item = _dtype_itemsize(_field(state, "dtype"))
    if shape is None or item is None or not all(type(d) is int and d >= 0 for d in shape):
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            "joblib array wrapper whose shape/dtype could not be read: the array bytes that follow "
            "cannot be located, so the rest of the file is not scanned",
            offset=offset,
        )
        raise WalkAbort("joblib array size unknown", offset, limit=True)
    itemsize, has_objects = item
    if has_objects:  # joblib pickles object arrays as a nested pickle right here
        nested = PickleWalker(walker.stream, ctx, torchscript=walker.torchscript).walk(offset, end)
        report_walk(ctx, walker.stream, nested, what="joblib object-array pickle")
        if not nested.stopped:
            raise WalkAbort("joblib object-array pickle did not end", nested.end, limit=True)
        return nested.end
    alignment = _field(state, "numpy_array_alignment_bytes")
    if type(alignment) is int:  # joblib >= 1.2: one byte of padding length, then the padding
        walker.stream.seek(offset)
        pad = walker.stream.read(1)
        if not pad or not 1 <= pad[0] <= max(alignment, 1):
            ctx.add(RuleId.MALFORMED, Severity.HIGH, "joblib array padding byte out of range", offset=offset)
            raise WalkAbort("bad joblib padding", offset, limit=True)
        offset += 1 + pad[0]
    nbytes = math.prod(shape) * itemsize
    if offset + nbytes > end:
        raise WalkAbort(
            f"joblib array declares {nbytes} bytes beyond the end of the data", offset, limit=True
        )
    if type(alignment) is not int:
        _plain_pickle_reading(walker, offset, min(end, offset + nbytes + PLAIN_READING_SLACK))
    return offset + nbytes


def _plain_pickle_reading(walker: PickleWalker, start: int, stop: int) -> None:
    """What `pickle.load` (not joblib.load) would do with the bytes joblib reads as array data.

    Without joblib's padding byte (an invalid opcode that stops a plain unpickler) those bytes are opcodes
    to a plain loader, so a file can be an array to joblib and a payload to pickle. Walk them as a pickle
    in a scratch context and report imports whose names look like real Python names (random array bytes
    almost never parse that far; an attacker's opcodes do).
    """
    scratch = ScanContext(limits=walker.ctx.limits, location="<plain-pickle reading>")
    scratch.shared.deadline = walker.ctx.shared.deadline
    side = PickleWalker(walker.stream, scratch).walk(start, stop, trial=True)
    for record in side.imports.values():
        if record.judgement.verdict is GlobalVerdict.ALLOW or not _DOTTED.match(record.qualified):
            continue
        denied = record.judgement.verdict is GlobalVerdict.DENY
        walker.ctx.add(
            RuleId.CODE_EXEC if denied else RuleId.CODE_UNKNOWN,
            Severity.CRITICAL if denied else Severity.HIGH,
            f"bytes that joblib reads as array data import {record.qualified} when read by pickle.load "
            f"({record.judgement.reason}): a joblib/pickle polyglot",
            offset=record.offset,
            opcode=record.opcode,
            reading="pickle.load",
            **{"global": record.qualified},
        )


register_build_hook(WRAPPER, _array_hook)


def _sniff_joblib(head: bytes, stream: BinaryIO) -> bool:
    return b"NumpyArrayWrapper" in head and b"joblib.numpy_pickle" in head and looks_like_pickle(head[:256])


@register(Format.JOBLIB, sniff=_sniff_joblib, priority=35)
def scan_joblib(stream: BinaryIO, ctx: ScanContext) -> None:
    """An uncompressed joblib file: a pickle whose arrays are skipped by the BUILD hook."""
    scan_pickle_region(stream, ctx, 0, stream_size(stream), what="joblib pickle")


def _sniff_zfile(head: bytes, stream: BinaryIO) -> bool:
    if not head.startswith(ZFILE_PREFIX) or len(head) < ZFILE_HEADER + 2:
        return False
    try:
        int(head[2:ZFILE_HEADER].strip(), 16)
    except ValueError:
        return False
    return True


@register(Format.JOBLIB, sniff=_sniff_zfile, priority=60)
def scan_joblib_zfile(stream: BinaryIO, ctx: ScanContext) -> None:
    """Old joblib `ZF` file: zlib data with a declared length; inflated under the ratio/size limits."""
    size = stream_size(stream)
    header = stream.read(ZFILE_HEADER + 1)
    declared = int(header[2:ZFILE_HEADER].strip(), 16)
    start = ZFILE_HEADER + (1 if header[ZFILE_HEADER:] == b" " else 0)
    budget = min(declared, int(max(size - start, 1) * ctx.limits.max_ratio))
    if declared > budget:
        ctx.incomplete(
            f"ZF file declares {declared} bytes from {size - start}: over the ratio limit; not scanned"
        )
        return
    stream.seek(start)
    try:
        inflated = inflate(stream.read, "zlib", ctx, what="ZF file", max_output=declared)
    except BombError:
        ctx.incomplete("ZF file inflates beyond its declared length or the size limits; not scanned")
        return
    except (zlib.error, ValueError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"ZF file: bad zlib data ({exc})")
        return
    with inflated.spool as spool:
        if inflated.size != declared or not inflated.complete:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"ZF file declares {declared} bytes but inflates to {inflated.size}"
                + ("" if inflated.complete else " (truncated zlib stream)"),
            )
        ctx.scan_nested(spool, "<joblib-zfile>")  # type: ignore[arg-type]


def _sniff_lz4(head: bytes, stream: BinaryIO) -> bool:
    return head.startswith(LZ4_FRAME_MAGIC)


@register(Format.JOBLIB, sniff=_sniff_lz4, priority=60)
def scan_lz4(stream: BinaryIO, ctx: ScanContext) -> None:
    """lz4 frame (joblib compress='lz4'): no lz4 decoder ships with the scanner, so fail closed."""
    ctx.incomplete(
        "lz4-compressed stream (joblib compress='lz4'): not decompressed by this scanner, so its "
        "content cannot be shown safe; re-save with zlib/gzip/xz compression or none"
    )


__all__ = ["WRAPPER", "scan_joblib", "scan_joblib_zfile", "scan_lz4"]
