"""NumPy `.npy` and `.npz`: parse the header without eval, walk object arrays as the pickles they are.

An `.npy` is a magic string, a version, a length-prefixed Python dict literal (descr, fortran_order,
shape) and the raw data. Numeric data is inert and skipped (its size must match the header: a mismatch
means loaders and scanners see different files). An object dtype ('O' anywhere in the descr) means the
data is a pickle that `np.load(allow_pickle=True)` runs: it is walked like any pickle. `.npz` is a zip
of `.npy` members, each scanned the same way (read in place when stored, no copy), through the structural
zip reader every zip gets (zips.scan_zip_archive).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.compressed import ARRAY_RATIO_FLOOR
from modelshield.scanning.pickles import scan_pickle_region
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size
from modelshield.scanning.zips import (
    report_duplicate_names,
    scan_zip_archive,
    zip_names,
)

NPY_MAGIC = b"\x93NUMPY"
NUMPY_MAX_HEADER = 10_000  # numpy refuses larger headers unless allow_pickle (numpy >= 1.24)
MAX_HEADER_PARSED = 1 << 16  # never literal_eval more than this
MAX_DESCR_DEPTH = 8

_TYPESTR = re.compile(r"\A[<>|=]?([?bhilqpBHILQPefdgFDGSUVOMmaciuc])(\d*)(?:\[\w+\])?\Z")
_CHAR_SIZES = {
    "?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8, "p": 8,
    "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32,
}  # fmt: skip


def typestr_itemsize(typestr: str) -> tuple[int, bool] | None:
    """(itemsize in bytes, is object) of a numpy type string like '<f8', '|O', '<U10', 'V16', 'M8[ns]'."""
    m = _TYPESTR.match(typestr.strip())
    if m is None:
        return None
    kind, digits = m.group(1), m.group(2)
    if kind == "O":
        return 8, True
    if digits:
        n = int(digits)
        if kind == "U":
            return 4 * n, False
        if kind in "SVabiufcmM":
            return n, False
        return None
    if kind in "Mm":
        return 8, False
    if kind in "SUV":  # flexible types without a size: zero-sized
        return 0, False
    size = _CHAR_SIZES.get(kind)
    return (size, False) if size is not None else None


def descr_itemsize(descr: Any, depth: int = 0) -> tuple[int, bool] | None:
    """Itemsize of an npy 'descr' (a type string or a structured list), and whether it holds objects."""
    if depth > MAX_DESCR_DEPTH:
        return None
    if isinstance(descr, str):
        return typestr_itemsize(descr)
    if not isinstance(descr, list):
        return None
    total, objects = 0, False
    for field in descr:
        if not isinstance(field, tuple) or len(field) not in (2, 3):
            return None
        sub = descr_itemsize(field[1], depth + 1)
        if sub is None:
            return None
        count = 1
        if len(field) == 3:
            shape = field[2] if isinstance(field[2], tuple) else (field[2],)
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                return None
            count = math.prod(shape)
        total += sub[0] * count
        objects = objects or sub[1]
    return total, objects


def _sniff_npy(head: bytes, stream: BinaryIO) -> bool:
    return head.startswith(NPY_MAGIC)


@register(Format.NUMPY, sniff=_sniff_npy, priority=80)
def scan_npy(stream: BinaryIO, ctx: ScanContext) -> None:
    """Header parsed as a literal, object arrays walked as pickles, numeric data skipped by size."""
    size = stream_size(stream)
    prefix = stream.read(12)
    if len(prefix) < 10:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "npy file shorter than its fixed header")
        return
    major = prefix[6]
    if major == 1:
        header_len = int.from_bytes(prefix[8:10], "little")
        data_start = 10 + header_len
    elif major in (2, 3):
        if len(prefix) < 12:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, "npy v2/v3 file shorter than its fixed header")
            return
        header_len = int.from_bytes(prefix[8:12], "little")
        data_start = 12 + header_len
    else:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"unknown npy format version {major}.{prefix[7]}")
        return
    if data_start > size:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"npy header declares {header_len} bytes, beyond the file")
        return
    if header_len > MAX_HEADER_PARSED:
        ctx.incomplete(f"npy header of {header_len} bytes is over the {MAX_HEADER_PARSED}-byte parse limit")
        return
    if header_len > NUMPY_MAX_HEADER:
        ctx.add(
            RuleId.MALFORMED,
            Severity.MEDIUM,
            f"npy header of {header_len} bytes: numpy refuses headers over {NUMPY_MAX_HEADER} bytes "
            "unless allow_pickle is set",
        )
    stream.seek(data_start - header_len)
    raw = stream.read(header_len)
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        header = ast.literal_eval(text.strip())  # literals only: never eval
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError, TypeError):
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "npy header is not a Python dict literal")
        return
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "npy header lacks descr/fortran_order/shape")
        return
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"npy shape {shape!r} is not a tuple of sizes")
        return
    item = descr_itemsize(header["descr"])
    if item is None:
        ctx.add(
            RuleId.MALFORMED, Severity.HIGH, f"npy descr {header['descr']!r} is not a dtype we understand"
        )
        return
    itemsize, has_objects = item
    ctx.set_metadata("numpy_dtype", str(header["descr"])[:200])
    if has_objects:
        # np.load(allow_pickle=True) unpickles the data: scan it as the pickle it is
        ctx.set_metadata("numpy_object_array", True)
        scan_pickle_region(stream, ctx, data_start, size, what="npy object-array pickle")
        return
    expected = math.prod(shape) * itemsize
    remaining = size - data_start
    if expected != remaining:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"npy data is {remaining} bytes but shape {shape} x itemsize {itemsize} needs {expected}",
            offset=data_start,
        )


def _sniff_npz(head: bytes, stream: BinaryIO) -> bool:
    if head[:4] != b"PK\x03\x04":
        return False
    names = [n for n in zip_names(stream) if not n.endswith("/")]
    return bool(names) and all(n.endswith(".npy") for n in names)


@register(Format.NUMPY_NPZ, sniff=_sniff_npz, priority=90)
def scan_npz(stream: BinaryIO, ctx: ScanContext) -> None:
    """Every member through the registry (npy members land in scan_npy), read in place when stored."""
    listing = scan_zip_archive(stream, ctx, what="npz", ratio_floor=ARRAY_RATIO_FLOOR)
    report_duplicate_names(listing, ctx, loader="numpy.load")


__all__ = ["descr_itemsize", "scan_npy", "scan_npz", "typestr_itemsize"]
