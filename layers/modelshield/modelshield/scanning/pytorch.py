"""PyTorch checkpoints: the zip format (torch.save, TorchScript) and the legacy stacked-pickle format.

Zip checkpoints hold pickles (`archive/data.pkl`, TorchScript's `constants.pkl`, `.debug_pkl`) next to
raw tensor bytes (`archive/data/<key>`). Every pickle is walked wherever it sits and whatever it is
called; members that are neither pickles nor tensor data are sniffed and scanned like any file. Tensor
members are never read: a 1 GiB checkpoint costs a few kilobytes of reads. The zip is read by its
structure: the central directory when it is sound, each entry checked against its local header, and a
walk of local headers when the central directory is broken; duplicate names (loaders differ on which
copy wins) and name mismatches are findings.

Legacy checkpoints (torch < 1.6, or `_use_new_zipfile_serialization=False`) are five pickles in a row
(magic number, protocol version, system info, the object, the storage keys) followed by raw storages,
each an 8-byte element count and the bytes; storages are skipped by the sizes they declare.

TorchScript: `code/**.py` is TorchScript source. It cannot import Python modules, but it can call any
registered operator; custom operator namespaces (a native library registered them) and file-reading
operators are reported. What TorchScript code computes is not analysed further (documented).
"""

from __future__ import annotations

import io
import re
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.pickles import (
    Call,
    Global,
    as_tuple,
    looks_like_pickle,
    report_walk,
    scan_pickle_region,
    stream_size,
)
from modelshield.scanning.pickles import PickleWalker as _Walker
from modelshield.scanning.registry import MiB, ScanContext, register

SPOOL_MAX_MEMORY = 32 * MiB
RATIO_FREE_BYTES = 16 * MiB
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_MAGIC_LONG1 = b"\x8a\x0a" + TORCH_MAGIC.to_bytes(10, "little")
_TENSOR_MEMBER = re.compile(r"(?:^|/)data/[^/]+\Z")
_SMALL_METADATA = re.compile(r"(?:^|/)(?:version|\.format_version|\.storage_alignment|byteorder|\.data/.*)\Z")

# --------------------------------------------------------------------------------------------------
# Zip structure (shared with the .npz scanner)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipMember:
    name: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    data_offset: int  # first byte of the member's (compressed) data


class RangeReader(io.RawIOBase):
    """A seekable read-only window [start, start+length) of another seekable stream (no copy)."""

    def __init__(self, parent: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._parent = parent
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._length + offset
        self._pos = max(0, self._pos)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._length - self._pos)
        if n <= 0:
            return 0
        self._parent.seek(self._start + self._pos)
        data = self._parent.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _local_header(stream: BinaryIO, offset: int) -> tuple[str, int, int, int, int, int] | None:
    """(name, flags, method, compressed size, size, data offset) of the local header at `offset`."""
    stream.seek(offset)
    head = stream.read(30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return None
    flags, method = struct.unpack_from("<HH", head, 6)
    csize, usize, nlen, elen = struct.unpack_from("<IIHH", head, 18)
    name = stream.read(nlen).decode("utf-8" if flags & 0x800 else "cp437", "replace")
    return name, flags, method, csize, usize, offset + 30 + nlen + elen


def _find_descriptor(stream: BinaryIO, data_offset: int, size: int) -> tuple[int, int, int] | None:
    """(compressed size, size, offset after it) of the data descriptor that closes a member: the first
    "PK\x07\x08" whose recorded compressed size equals its distance from the data (zip64 or not).
    Only used when the central directory is broken, so reading through the data is acceptable."""
    pos = data_offset
    carry = b""
    while pos < size:
        stream.seek(pos)
        chunk = carry + stream.read(MiB)
        base = pos - len(carry)
        if len(chunk) <= len(carry):
            break
        start = 0
        while (hit := chunk.find(b"PK\x07\x08", start)) >= 0:
            at = base + hit
            stream.seek(at + 8)
            fields = stream.read(16)
            if len(fields) >= 8 and struct.unpack_from("<I", fields)[0] == at - data_offset:
                return at - data_offset, struct.unpack_from("<I", fields, 4)[0], at + 16
            if len(fields) == 16 and struct.unpack_from("<Q", fields)[0] == at - data_offset:
                return at - data_offset, struct.unpack_from("<Q", fields, 8)[0], at + 24
            start = hit + 1
        carry = chunk[-3:]
        pos = base + len(chunk)
    return None


def zip_members(stream: BinaryIO, ctx: ScanContext | None) -> tuple[list[ZipMember], list[str]]:
    """Members by the central directory (checked against local headers), else by a local-header walk.

    Returns the members and the structural problems found (each worth an MS-MALFORMED finding).
    """
    problems: list[str] = []
    members: list[ZipMember] = []
    limit = ctx.limits.max_entries if ctx is not None else 20_000
    try:
        stream.seek(0)
        with zipfile.ZipFile(stream) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError):
        infos = None
        problems.append("zip central directory is missing or unreadable; members found by local headers")
    if infos is not None:
        for info in infos[: limit + 1]:
            local = _local_header(stream, info.header_offset)
            if local is None:
                problems.append(f"{info.filename}: central directory points at no local header")
                continue
            if local[0] != info.filename:
                problems.append(f"{info.filename}: local header names it {local[0]!r} (loaders differ)")
            members.append(
                ZipMember(
                    info.filename,
                    info.header_offset,
                    info.compress_type,
                    info.compress_size,
                    info.file_size,
                    local[5],
                )
            )
    else:
        offset = 0
        size = stream_size(stream)
        while offset < size and len(members) <= limit:
            if ctx is not None:
                ctx.check()
            local = _local_header(stream, offset)
            if local is None:
                break
            name, flags, method, csize, usize, data_offset = local
            if flags & 0x08 and csize == 0:  # sizes follow the data, in a data descriptor
                if ctx is None:  # sniffing: the name is all we need, do not read on
                    members.append(ZipMember(name, offset, method, 0, 0, data_offset))
                    break
                found = _find_descriptor(stream, data_offset, size)
                if found is None:
                    problems.append(f"{name}: no data descriptor found; local-header walk stops here")
                    break
                csize, usize, offset = found
                members.append(ZipMember(name, offset, method, csize, usize, data_offset))
                continue
            members.append(ZipMember(name, offset, method, csize, usize, data_offset))
            offset = data_offset + csize
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})[:5]
        problems.append(f"duplicate member names {dupes}: loaders disagree on which copy they read")
    return members, problems


def zip_names(stream: BinaryIO) -> list[str]:
    """Member names for sniffers (never raises)."""
    try:
        members, _ = zip_members(stream, None)
    except Exception:
        return []
    return [m.name for m in members]


def open_member(stream: BinaryIO, member: ZipMember, ctx: ScanContext) -> BinaryIO | None:
    """A seekable stream of a member's bytes: a window for stored members, a bounded spool otherwise."""
    end = stream_size(stream)
    if member.data_offset + member.compress_size > end:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"zip member {member.name} declares {member.compress_size} bytes beyond the end of the file",
            member=member.name,
        )
        return None
    window = RangeReader(stream, member.data_offset, member.compress_size)
    if member.compress_type == zipfile.ZIP_STORED:
        return window  # type: ignore[return-value]
    if member.compress_type != zipfile.ZIP_DEFLATED:
        ctx.incomplete(
            f"zip member {member.name} uses compression method {member.compress_type}; not scanned"
        )
        return None
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)
    inflater = zlib.decompressobj(-15)
    # the ratio limit stops bombs; small members of zeros (np.savez_compressed) legitimately exceed it,
    # so the first RATIO_FREE_BYTES of what the member declares are allowed whatever the ratio
    budget = max(
        int(max(member.compress_size, 1) * ctx.limits.max_ratio), min(member.file_size, RATIO_FREE_BYTES)
    )
    written = 0
    while True:
        ctx.check()
        chunk = window.read(MiB)
        if not chunk:
            break
        try:
            out = inflater.decompress(chunk, budget - written + 1)
        except zlib.error as exc:
            ctx.add(RuleId.MALFORMED, Severity.HIGH, f"zip member {member.name}: bad deflate data ({exc})")
            return None
        written += len(out)
        if written > budget or not ctx.account_uncompressed(len(out)):
            ctx.incomplete(
                f"zip member {member.name} inflates beyond the ratio/size limits; not scanned",
                member=member.name,
            )
            return None
        spool.write(out)
    spool.seek(0)
    return spool  # type: ignore[return-value]


def report_zip_problems(ctx: ScanContext, problems: list[str]) -> None:
    for problem in problems:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, problem)


# --------------------------------------------------------------------------------------------------
# Zip checkpoints
# --------------------------------------------------------------------------------------------------


def _is_torch_zip(names: list[str]) -> bool:
    return any(n.endswith("/data.pkl") or n == "data.pkl" or n.endswith("/version") for n in names)


def _is_torchscript(names: list[str]) -> bool:
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


def scan_torch_zip(stream: BinaryIO, ctx: ScanContext, *, torchscript: bool) -> None:
    members, problems = zip_members(stream, ctx)
    report_zip_problems(ctx, problems)
    if len(members) > ctx.limits.max_entries:
        ctx.incomplete(f"more than {ctx.limits.max_entries} zip members; the rest not scanned")
        members = members[: ctx.limits.max_entries]
    pickles = 0
    skipped_tensor_bytes = 0
    for member in members:
        ctx.check()
        name = member.name
        if name.endswith("/"):
            continue
        if _TENSOR_MEMBER.search(name):  # raw tensor bytes, read by key as a storage: never parsed
            skipped_tensor_bytes += member.compress_size
            continue
        data = open_member(stream, member, ctx)
        if data is None:
            continue
        head = data.read(4096)
        data.seek(0)
        if name.endswith(".pkl") or looks_like_pickle(head):
            pickles += 1
            _scan_member_as_pickle(ctx, data, name, torchscript=torchscript)
        elif torchscript and "/code/" in name and name.endswith(".py"):
            size = member.file_size
            if size > ctx.limits.max_metadata_bytes:
                ctx.incomplete(f"TorchScript source {name} larger than the metadata limit; not scanned")
                continue
            _scan_torchscript_code(ctx, name, data.read(size).decode("utf-8", "replace"))
        elif _SMALL_METADATA.search(name) and member.file_size <= 4096:
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


def _text(value: Any) -> str | None:
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return value if type(value) is str else None


def _storage_sizes(persistent_ids: list[Any]) -> dict[str, tuple[int, int | None]]:
    """key -> (element size, element count) from ('storage', torch.XStorage, key, location, numel)."""
    out: dict[str, tuple[int, int | None]] = {}
    for pid in persistent_ids:
        items = as_tuple(pid)
        if not items or len(items) < 5 or _text(items[0]) != "storage":
            continue
        kind = items[1]
        key = _text(items[2])
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
    keys = [k for k in (_text(v) for v in keys_value) if k is not None] if type(keys_value) is list else []
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


__all__ = [
    "RangeReader",
    "ZipMember",
    "open_member",
    "report_zip_problems",
    "scan_pytorch_legacy",
    "scan_pytorch_zip",
    "scan_torch_zip",
    "scan_torchscript",
    "zip_members",
    "zip_names",
]
