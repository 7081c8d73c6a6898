"""PyTorch checkpoints: the zip format (torch.save, TorchScript) and the legacy stacked-pickle format.

Zip checkpoints hold pickles (`archive/data.pkl`, TorchScript's `constants.pkl`, `.debug_pkl`) next to
raw tensor bytes (`archive/data/<key>`). Every pickle is walked wherever it sits and whatever it is
called; members that are neither pickles nor tensor data are sniffed and scanned like any file. Tensor
members are never read: a 1 GiB checkpoint costs a few kilobytes of reads. The zip is read by the one
structural zip reader (zips.read_zip), so checkpoints get every check a generic zip gets: central
directory against local headers, a local-header walk when the central directory is broken, hidden and
overlapping members, bombs, unsafe names; duplicate names are also malformed here (torch.load reads one
copy by name).

Legacy checkpoints (torch < 1.6, or `_use_new_zipfile_serialization=False`) are five pickles in a row
(magic number, protocol version, system info, the object, the storage keys) followed by raw storages,
each an 8-byte element count and the bytes; storages are skipped by the sizes they declare.

TorchScript: `code/**.py` is TorchScript source. It cannot import Python modules, but it can call any
registered operator; custom operator namespaces (a native library registered them) and file-reading
operators are reported. What TorchScript code computes is not analysed further (documented).
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.compressed import ARRAY_RATIO_FLOOR
from modelshield.scanning.pickles import (
    Call,
    Global,
    as_text,
    as_tuple,
    looks_like_pickle,
    report_walk,
    scan_pickle_region,
)
from modelshield.scanning.pickles import PickleWalker as _Walker
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import stream_size
from modelshield.scanning.zips import (
    ZipEntry,
    iter_zip_members,
    read_zip,
    report_duplicate_names,
    scan_zip_prefix,
    zip_names,
)

TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_MAGIC_LONG1 = b"\x8a\x0a" + TORCH_MAGIC.to_bytes(10, "little")
_TENSOR_MEMBER = re.compile(r"(?:^|/)data/[^/]+\Z")
_SMALL_METADATA = re.compile(r"(?:^|/)(?:version|\.format_version|\.storage_alignment|byteorder|\.data/.*)\Z")

# --------------------------------------------------------------------------------------------------
# Zip checkpoints
# --------------------------------------------------------------------------------------------------


def _is_torch_zip(names: set[str]) -> bool:
    return any(n.endswith("/data.pkl") or n == "data.pkl" or n.endswith("/version") for n in names)


def _is_torchscript(names: set[str]) -> bool:
    return _is_torch_zip(names) and any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _sniff_torch_zip(head: bytes, stream: BinaryIO) -> bool:
    return head[:4] == b"PK\x03\x04" and _is_torch_zip(zip_names(stream))


def _sniff_torchscript(head: bytes, stream: BinaryIO) -> bool:
    return head[:4] == b"PK\x03\x04" and _is_torchscript(zip_names(stream))


# TorchScript source: operators whose namespace a native library registered, and file access.
_TS_OPS = re.compile(r"\bops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_TS_SAFE_NAMESPACES = frozenset({"aten", "prim", "quantized", "_quantized", "profiler", "_caffe2", "cuda"})
_TS_FILE_ACCESS = re.compile(
    r"\b(?:from_file|_load_for_lite_interpreter|load_library|torch\.load|torch\.save)\b"
)


def _scan_torchscript_code(ctx: ScanContext, name: str, text: str) -> None:
    for match in _TS_FILE_ACCESS.finditer(text):
        ctx.add(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"TorchScript code calls {match.group(0)} (file or library access at run time)",
            member=name,
            call=match.group(0),
        )
    for ns, op in {(m.group(1), m.group(2)) for m in _TS_OPS.finditer(text)}:
        if ns not in _TS_SAFE_NAMESPACES:
            ctx.add(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"TorchScript code calls custom operator ops.{ns}.{op}: native code from a library the "
                "loader must have registered",
                member=name,
                operator=f"{ns}.{op}",
            )


def _scan_member_as_pickle(ctx: ScanContext, stream: BinaryIO, name: str, *, torchscript: bool) -> None:
    child = ctx.nested(name)
    child.shared.formats.append(Format.PICKLE.value)
    scan_pickle_region(stream, child, 0, stream_size(stream), torchscript=torchscript)


def _not_tensor(entry: ZipEntry) -> bool:
    """Tensor members (`data/<key>`) are raw storage bytes torch reads by key, never unpickles."""
    return not _TENSOR_MEMBER.search(entry.name)


def scan_torch_zip(stream: BinaryIO, ctx: ScanContext, *, torchscript: bool) -> None:
    """Structure checked like any zip; every non-tensor member read: pickles walked, the rest sniffed."""
    listing = read_zip(stream, ctx, ratio_floor=ARRAY_RATIO_FLOOR)
    scan_zip_prefix(stream, listing, ctx, what="PyTorch archive")
    report_duplicate_names(listing, ctx, loader="torch.load")
    skipped_tensor_bytes = sum(e.compressed_size for e in listing.entries if not _not_tensor(e))
    pickles = 0
    for member, data in iter_zip_members(stream, listing, ctx, select=_not_tensor):
        name = member.name
        head = data.read(4096)
        size = stream_size(data)  # what was read, not what a header declares
        if name.endswith(".pkl") or looks_like_pickle(head):
            pickles += 1
            _scan_member_as_pickle(ctx, data, name, torchscript=torchscript)
        elif torchscript and "/code/" in name and name.endswith(".py"):
            if size > ctx.limits.max_metadata_bytes:
                ctx.incomplete(f"TorchScript source {name} larger than the metadata limit; not scanned")
                continue
            _scan_torchscript_code(ctx, name, data.read(size).decode("utf-8", "replace"))
        elif _SMALL_METADATA.search(name) and size <= 4096:
            continue  # version / byteorder / alignment / serialization id: a few inert bytes
        else:
            ctx.scan_nested(data, name)
    if pickles == 0:
        ctx.add(
            RuleId.MALFORMED, Severity.HIGH, "PyTorch zip without any pickle (no data.pkl): not a checkpoint"
        )
    ctx.set_metadata("tensor_bytes_not_read", skipped_tensor_bytes)


@register(Format.TORCHSCRIPT, sniff=_sniff_torchscript, priority=91)
def scan_torchscript(stream: BinaryIO, ctx: ScanContext) -> None:
    """TorchScript archive: its pickles (with __torch__ classes allowed) and its code/ operators."""
    scan_torch_zip(stream, ctx, torchscript=True)


@register(Format.PYTORCH_ZIP, sniff=_sniff_torch_zip, priority=90)
def scan_pytorch_zip(stream: BinaryIO, ctx: ScanContext) -> None:
    """torch.save zip checkpoint: every pickle member walked, tensor members skipped unread."""
    scan_torch_zip(stream, ctx, torchscript=False)


# --------------------------------------------------------------------------------------------------
# Legacy checkpoints
# --------------------------------------------------------------------------------------------------

_ELEMENT_SIZE = {
    "Float": 4,
    "Double": 8,
    "Half": 2,
    "BFloat16": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "ComplexFloat": 8,
    "ComplexDouble": 16,
    "QUInt8": 1,
    "QInt8": 1,
    "QInt32": 4,
    "QUInt4x2": 1,
    "QUInt2x4": 1,
    "Untyped": 1,
}


def _sniff_legacy(head: bytes, stream: BinaryIO) -> bool:
    # PROTO n, LONG1 <10-byte magic>, STOP  (protocol 2+; older protocols write "L<digits>L\n")
    return (head[:1] == b"\x80" and head[2:14] == _MAGIC_LONG1) or head.startswith(b"L%dL\n." % TORCH_MAGIC)


def _storage_sizes(persistent_ids: list[Any]) -> dict[str, tuple[int, int | None]]:
    """key -> (element size, element count) from ('storage', torch.XStorage, key, location, numel)."""
    out: dict[str, tuple[int, int | None]] = {}
    for pid in persistent_ids:
        items = as_tuple(pid)
        if not items or len(items) < 5 or as_text(items[0]) != "storage":
            continue
        kind = items[1]
        key = as_text(items[2])
        if key is None:
            continue
        elsize = 1
        if type(kind) is Global:
            elsize = _ELEMENT_SIZE.get(kind.name.removesuffix("Storage"), 0)
        elif type(kind) is Call:  # torch.dtype object via a call: unknown element size
            elsize = 0
        numel = items[4] if type(items[4]) is int else None
        out.setdefault(key, (elsize, numel))
    return out


@register(Format.PYTORCH_LEGACY, sniff=_sniff_legacy, priority=85)
def scan_pytorch_legacy(stream: BinaryIO, ctx: ScanContext) -> None:
    """Five pickles, then storages skipped by their declared sizes (all bounded by the file size)."""
    end = stream_size(stream)
    walker = _Walker(stream, ctx)
    offset = 0
    walks = []
    for what in ("magic number", "protocol version", "system info", "checkpoint object", "storage keys"):
        ctx.check()
        walk = walker.walk(offset, end)
        report_walk(ctx, stream, walk, what=f"legacy torch {what} pickle")
        walks.append(walk)
        if not walk.stopped:
            return
        offset = walk.end
    if walks[0].value != TORCH_MAGIC:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "legacy torch file with a wrong magic number")
    sizes = _storage_sizes(walks[3].persistent_ids)
    keys_value = walks[4].value
    keys = [k for k in (as_text(v) for v in keys_value) if k is not None] if type(keys_value) is list else []
    if not keys or len(keys) != len(keys_value):
        keys = sorted(sizes)  # torch writes them sorted; used when the list was too long to track
    for key in keys:
        ctx.check()
        elsize, numel = sizes.get(key, (0, None))
        stream.seek(offset)
        head = stream.read(8)
        if len(head) < 8:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"legacy torch storage {key!r} missing (file truncated)",
                offset=offset,
            )
            return
        count = int.from_bytes(head, "little")
        if elsize == 0:
            ctx.incomplete(
                f"legacy torch storage {key!r} has an unknown element type; the rest not accounted for",
                offset=offset,
            )
            return
        if numel is not None and count != numel:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"legacy torch storage {key!r} declares {count} elements, its persistent id {numel}",
                offset=offset,
            )
        nbytes = count * elsize
        if offset + 8 + nbytes > end:
            ctx.incomplete(
                f"legacy torch storage {key!r} declares {nbytes} bytes beyond the end of the file",
                offset=offset,
            )
            return
        offset += 8 + nbytes
    if offset < end:
        trailing = end - offset
        ctx.add(
            RuleId.MALFORMED,
            Severity.MEDIUM,
            f"{trailing} bytes after the last legacy torch storage (torch.load never reads them)",
            offset=offset,
        )
        scan_pickle_region(stream, ctx, offset, end, what="data after the legacy storages")
    ctx.set_metadata("tensor_bytes_not_read", offset - walks[-1].end)


__all__ = ["scan_pytorch_legacy", "scan_pytorch_zip", "scan_torch_zip", "scan_torchscript"]
