"""Zip archives, read by their structure (the end record, the central directory and every local header).

Why our own zip reader: loaders disagree about zips. Python's zipfile trusts the central directory, streaming
unzippers trust local headers, and both accept bytes before the archive. A scanner that reads a zip one
way can be shown a clean archive while the loader reads another. So we parse the end record, the central
directory *and* every local header, compare them, and report every disagreement:
- member names that escape the extraction directory (`..`, absolute, drive letters, backslashes), symlinks
  and device files, duplicate names, overlapping entries (overlap "quine" bombs), ratio and size bombs,
  entry counts -> MS-ARCHIVE-UNSAFE;
- central vs local name/method mismatches, data before the archive (polyglots), a missing or corrupt
  central directory (then we walk the local headers instead) -> MS-MALFORMED.
Every member is detected by content and scanned through `ScanContext.scan_nested` (location
`outer.zip!inner/path`); stored members are scanned in place through a window on the file, compressed ones
are inflated into a bounded SpooledTemporaryFile. Budgets: Limits.max_entries, max_ratio, and the
artifact-wide Limits.max_uncompressed_bytes via `ScanContext.account_uncompressed`.
"""

from __future__ import annotations

import io
import itertools
import lzma
import stat
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.compressed import OUT_CHUNK, RATIO_FLOOR, BombError, inflate
from modelshield.scanning.registry import MiB, ScanContext, register
from modelshield.scanning.streams import READ_CHUNK, SubStream, path_problem, stream_size, window

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD_SIG = b"PK\x05\x06"
_EOCD64_SIG = b"PK\x06\x06"
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"
_MAX_EOCD_SEARCH = 22 + 0xFFFF


@dataclass
class ZipEntry:
    """One member as the central directory (or, in fallback, the local header) describes it."""

    name: str
    local_offset: int
    data_offset: int
    compressed_size: int
    uncompressed_size: int
    method: int
    flags: int
    crc: int
    mode: int  # unix mode from the external attributes (0 when not a unix archive)

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") and self.uncompressed_size == 0

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x1)


@dataclass
class ZipListing:
    entries: list[ZipEntry]
    prefix: int  # bytes before the first local header (self-extractors, polyglots)
    central: bool  # read from the central directory (False: local-header walk fallback)
    cd_start: int = -1  # where the central directory starts (-1: unknown)
    ratio_floor: int = RATIO_FLOOR  # output allowed before compression ratios are judged

    def duplicate_names(self) -> list[str]:
        counts = Counter(e.name for e in self.entries if not e.is_dir)
        return sorted(name for name, n in counts.items() if n > 1)


class ZipError(Exception):
    pass


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        return raw.decode("utf-8", errors="replace")
    return raw.decode("cp437")


def find_eocd(stream: BinaryIO, size: int, *, exact: bool = False) -> tuple[int, bytes] | None:
    """Offset and bytes of the end-of-central-directory record, preferring one that ends the file
    (with `exact`, only one whose comment ends exactly at the end of the file)."""
    if size >= 22:  # the usual case, an archive without a comment: 22 bytes instead of 64 KiB
        stream.seek(size - 22)
        last = stream.read(22)
        if last[:4] == _EOCD_SIG and last[20:22] == b"\x00\x00":
            return size - 22, last
    tail_len = min(size, _MAX_EOCD_SEARCH)
    stream.seek(size - tail_len)
    tail = stream.read(tail_len)
    best: tuple[int, bytes] | None = None
    pos = tail.rfind(_EOCD_SIG)
    while pos != -1:
        record = tail[pos : pos + 22]
        if len(record) == 22:
            comment_len = struct.unpack("<H", record[20:22])[0]
            if pos + 22 + comment_len == tail_len:
                return size - tail_len + pos, record
            if best is None and not exact and pos + 22 + comment_len <= tail_len:
                best = (size - tail_len + pos, record)
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    return best


@dataclass
class _EndRecord:
    """What the end records say about the central directory (zip64 values where there are any)."""

    disk: int
    cd_disk: int
    total: int
    cd_size: int
    cd_offset: int  # as recorded (before any correction for prepended data)
    cd_end: int  # where the central directory must end: the zip64 end record, else the end record
    comment_len: int


def _end_record(stream: BinaryIO, eocd_pos: int, record: bytes) -> _EndRecord:
    """Decode the end record, and the zip64 end record wherever a zip64 locator precedes it.

    The zip64 record counts even when the 32-bit fields did not overflow (torch.save writes one
    always); like zipfile, we then expect the central directory to end where the zip64 record starts.
    Raises ZipError when the zip64 records are announced but missing.
    """
    _sig, disk, cd_disk, _n_disk, total, cd_size, cd_offset, clen = struct.unpack("<4sHHHHIIH", record)
    overflow = total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF
    locator = b""
    if eocd_pos >= 20 + 56:
        stream.seek(eocd_pos - 20)
        locator = stream.read(20)
    if len(locator) != 20 or locator[:4] != _EOCD64_LOCATOR_SIG:
        if overflow:
            raise ZipError("zip64 values without a zip64 locator")
        return _EndRecord(disk, cd_disk, total, cd_size, cd_offset, eocd_pos, clen)
    _s, _disk64, eocd64_pos, _disks = struct.unpack("<4sIQI", locator)
    stream.seek(eocd64_pos)
    rec64 = stream.read(56)
    if len(rec64) != 56 or rec64[:4] != _EOCD64_SIG:
        # The record may sit elsewhere when data is prepended: it must end where the locator starts.
        stream.seek(eocd_pos - 20 - 56)
        rec64 = stream.read(56)
        if len(rec64) != 56 or rec64[:4] != _EOCD64_SIG:
            raise ZipError("zip64 end record not found")
    (_s, _rsize, _vm, _vn, disk, cd_disk, _n_disk64, total, cd_size, cd_offset) = struct.unpack(
        "<4sQHHIIQQQQ", rec64
    )
    return _EndRecord(disk, cd_disk, total, cd_size, cd_offset, eocd_pos - 20 - 56, clen)


def sniff_zip(head: bytes, stream: BinaryIO) -> bool:
    """A local header at 0, an empty archive, or a valid end record at the end (data prepended)."""
    if head[:4] in (_LOCAL_SIG, _EOCD_SIG, b"PK\x07\x08"):
        return True
    size = stream_size(stream)
    found = find_eocd(stream, size, exact=True)
    if found is None:
        return False
    try:
        end = _end_record(stream, *found)
    except (ZipError, struct.error):
        return False
    if end.total == 0 or end.cd_size > end.cd_end:
        return False
    stream.seek(end.cd_end - end.cd_size)
    return stream.read(4) == _CENTRAL_SIG


def central_names(stream: BinaryIO, *, max_names: int = 4096, max_bytes: int = 4 * MiB) -> set[str]:
    """Member names listed in the central directory, read cheaply for sniffers (empty when there is none).

    Handles zip64 end records and data prepended to the archive, as loaders do."""
    size = stream_size(stream)
    found = find_eocd(stream, size)
    if found is None:
        return set()
    try:
        end = _end_record(stream, *found)
    except (ZipError, struct.error):
        return set()
    if end.cd_size > end.cd_end:
        return set()
    stream.seek(end.cd_end - end.cd_size)
    cd = stream.read(min(end.cd_size, max_bytes))
    names: set[str] = set()
    pos = 0
    while pos + 46 <= len(cd) and cd[pos : pos + 4] == _CENTRAL_SIG and len(names) < max_names:
        flags = struct.unpack("<H", cd[pos + 8 : pos + 10])[0]
        nlen, xlen, mlen = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
        names.add(_decode_name(cd[pos + 46 : pos + 46 + nlen], flags))
        pos += 46 + nlen + xlen + mlen
    return names


def zip_names(stream: BinaryIO, *, max_names: int = 4096) -> set[str]:
    """Member names for sniffers: the central directory's, else those of the local headers in a row from
    the start (a checkpoint whose central directory was cut off is still recognised). Never raises."""
    try:
        names = central_names(stream, max_names=max_names)
        if names:
            return names
        pos, size = 0, stream_size(stream)
        while pos < size and len(names) < max_names:
            local = _read_local(stream, pos)
            if local is None:
                break
            name, flags, _method, csize, _usize, data_offset = local
            names.add(name)
            if flags & 0x8 and csize == 0:
                break  # the size follows the data: finding it means reading on, too much for a sniffer
            pos = _skip_descriptor(stream, data_offset + csize, flags)
        return names
    except (OSError, ValueError, struct.error):
        return set()


def read_zip(stream: BinaryIO, ctx: ScanContext, *, ratio_floor: int = RATIO_FLOOR) -> ZipListing:
    """The members of a zip, by its central directory or, when that is broken, by its local headers,
    checked (names, links, duplicates, overlaps, declared bombs, hidden members); contents not read."""
    size = stream_size(stream)
    try:
        listing = _read_central(stream, size, ctx)
    except (ZipError, struct.error) as exc:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"zip central directory missing or corrupt ({exc}); members read from local headers instead "
            "(loaders that trust the central directory will disagree)",
        )
        listing = _walk_local_headers(stream, size, ctx)
    listing.ratio_floor = ratio_floor
    _check_entries(stream, listing, size, ctx)
    return listing


def _read_central(stream: BinaryIO, size: int, ctx: ScanContext) -> ZipListing:
    found = find_eocd(stream, size)
    if found is None:
        raise ZipError("no end-of-central-directory record")
    eocd_pos, record = found
    end = _end_record(stream, eocd_pos, record)
    if eocd_pos + 22 + end.comment_len < size:
        ctx.add(
            RuleId.MALFORMED,
            Severity.MEDIUM,
            f"{size - eocd_pos - 22 - end.comment_len} bytes after the zip end record",
            offset=eocd_pos,
        )
    disk, cd_disk, total, cd_size, cd_offset, cd_end = (
        end.disk,
        end.cd_disk,
        end.total,
        end.cd_size,
        end.cd_offset,
        end.cd_end,
    )
    if disk != 0 or cd_disk != 0:
        raise ZipError("multi-disk (spanned) archives are not supported")
    if cd_size > cd_end:
        raise ZipError(f"central directory size {cd_size} larger than the data before the end record")
    cd_start = cd_end - cd_size
    shift = cd_start - cd_offset  # bytes prepended to the archive (zipfile applies the same correction)
    if shift < 0:
        raise ZipError("central directory offset beyond its actual position")
    limit = ctx.limits.max_entries
    if total > limit:
        ctx.incomplete(f"zip declares {total} entries, over the {limit}-entry limit; only {limit} scanned")
        ctx.add(RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"zip has {total} entries (limit {limit})")
    entries: list[ZipEntry] = []
    stream.seek(cd_start)
    cd = io.BufferedReader(SubStream(stream, cd_start, cd_size), buffer_size=256 * 1024)  # type: ignore[arg-type]
    while len(entries) < min(total, limit):
        if len(entries) & 0xFF == 0:
            ctx.check()
        fixed = cd.read(46)
        if len(fixed) != 46 or fixed[:4] != _CENTRAL_SIG:
            raise ZipError(f"central directory entry {len(entries)} is truncated or has a bad signature")
        (
            _sig,
            made_by,
            _need,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            usize,
            nlen,
            xlen,
            mlen,
            _ds,
            _ia,
            ext_attr,
            loff,
        ) = struct.unpack("<4sHHHHHHIIIHHHHHII", fixed)
        raw_name = cd.read(nlen)
        extra = cd.read(xlen)
        cd.read(mlen)
        if len(raw_name) != nlen or len(extra) != xlen:
            raise ZipError("central directory entry runs past the directory")
        usize, csize, loff = _zip64_extra(extra, usize, csize, loff)
        mode = (ext_attr >> 16) & 0xFFFF if (made_by >> 8) == 3 else 0
        entries.append(
            ZipEntry(
                name=_decode_name(raw_name, flags),
                local_offset=loff + shift,
                data_offset=-1,
                compressed_size=csize,
                uncompressed_size=usize,
                method=method,
                flags=flags,
                crc=crc,
                mode=mode,
            )
        )
    first_local = min((e.local_offset for e in entries), default=cd_start)
    return ZipListing(entries, prefix=first_local, central=True, cd_start=cd_start)


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Apply the zip64 extended-information extra field to the values that overflowed 32 bits."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[pos : pos + 4])
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            values = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset


def _read_local(stream: BinaryIO, offset: int) -> tuple[str, int, int, int, int, int] | None:
    """(name, flags, method, csize, usize, data_offset) of the local header at `offset`, or None."""
    stream.seek(offset)
    fixed = stream.read(30)
    if len(fixed) != 30 or fixed[:4] != _LOCAL_SIG:
        return None
    _sig, _v, flags, method, _t, _d, _crc, csize, usize, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", fixed)
    raw_name = stream.read(nlen)
    extra = stream.read(xlen)
    if len(raw_name) != nlen or len(extra) != xlen:
        return None
    usize, csize, _ = _zip64_extra(extra, usize, csize, 0)
    return _decode_name(raw_name, flags), flags, method, csize, usize, offset + 30 + nlen + xlen


def _walk_local_headers(stream: BinaryIO, size: int, ctx: ScanContext) -> ZipListing:
    """Fallback: members in file order by their local headers (what a streaming unzipper sees)."""
    entries: list[ZipEntry] = []
    stream.seek(0)
    head = stream.read(64 * 1024)
    pos = head.find(_LOCAL_SIG)
    prefix = max(pos, 0)
    while 0 <= pos < size:
        ctx.check()
        local = _read_local(stream, pos)
        if local is None:
            break
        if len(entries) >= ctx.limits.max_entries:
            ctx.add(RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"zip has more than {len(entries)} entries")
            ctx.incomplete(f"zip members beyond the {ctx.limits.max_entries}-entry limit not scanned")
            break
        name, flags, method, csize, usize, data_offset = local
        after = -1  # where the data descriptor ends, when the search below found it
        if flags & 0x8 and csize == 0:
            if method == 8:
                try:
                    csize = _deflate_length(stream, data_offset, ctx)
                except zlib.error as exc:
                    ctx.add(
                        RuleId.MALFORMED, Severity.HIGH, f"zip member {name!r}: corrupt deflate data: {exc}"
                    )
                    ctx.incomplete("zip local-header walk stopped at corrupt data")
                    break
            else:
                found = _find_descriptor(stream, data_offset, size, ctx)
                csize, usize, after = found if found is not None else (-1, 0, -1)
            if csize < 0:
                ctx.incomplete(f"zip member {name!r}: end of its data not found; walk stopped")
                break
        entries.append(ZipEntry(name, pos, data_offset, csize, usize, method, flags, 0, 0))
        pos = after if after >= 0 else _skip_descriptor(stream, data_offset + csize, flags)
        stream.seek(pos)
        if stream.read(4) != _LOCAL_SIG:
            break
    return ZipListing(entries, prefix=prefix, central=False)


def _skip_descriptor(stream: BinaryIO, pos: int, flags: int) -> int:
    """Where the next header starts after member data ending at `pos`: past a data descriptor (with or
    without its signature, 32- or 64-bit sizes) when one is there."""
    stream.seek(pos)
    tail = stream.read(28)
    signed = tail[:4] == b"PK\x07\x08"
    if not signed and not flags & 0x8:
        return pos
    for length in (16, 24) if signed else (12, 20):
        if tail[length : length + 4] in (_LOCAL_SIG, _CENTRAL_SIG):
            return pos + length
    return pos + (16 if signed else 12)


def _find_descriptor(
    stream: BinaryIO, data_offset: int, size: int, ctx: ScanContext
) -> tuple[int, int, int] | None:
    """(compressed size, size, end) of the data descriptor closing a member whose local header has no
    sizes and whose data cannot be measured by inflating it (stored): the first "PK\x07\x08" whose
    recorded compressed size equals its distance from the data (32- or 64-bit sizes). Only used when the
    central directory is broken, so reading through the data is acceptable."""
    pos, carry = data_offset, b""
    while pos < size:
        ctx.check()
        stream.seek(pos)
        chunk = carry + stream.read(READ_CHUNK)
        base = pos - len(carry)
        if len(chunk) <= len(carry):
            break
        start = 0
        while (hit := chunk.find(b"PK\x07\x08", start)) >= 0:
            at = base + hit
            stream.seek(at + 8)
            fields = stream.read(20)
            matches = [
                (at - data_offset, struct.unpack_from(fmt, fields, width)[0], at + 8 + 2 * width)
                for fmt, width in (("<I", 4), ("<Q", 8))
                if len(fields) >= 2 * width and struct.unpack_from(fmt, fields)[0] == at - data_offset
            ]
            # a zip64 descriptor also matches as a 32-bit one: the one a header (or the end) follows wins
            for match in matches:
                if match[2] >= size or fields[match[2] - at - 8 : match[2] - at - 4] in (
                    _LOCAL_SIG,
                    _CENTRAL_SIG,
                ):
                    return match
            if matches:
                return matches[0]
            start = hit + 1
        carry = chunk[-3:]
        pos = base + len(chunk)
    return None


def _deflate_length(stream: BinaryIO, start: int, ctx: ScanContext) -> int:
    """Length of a raw deflate stream (for local entries without sizes), by inflating it to its end."""
    stream.seek(start)
    decoder = zlib.decompressobj(-15)
    consumed = 0
    while not decoder.eof:
        ctx.check()
        data = stream.read(READ_CHUNK)
        if not data:
            return -1
        consumed += len(data)
        produced = 0
        while data and not decoder.eof:
            produced += len(decoder.decompress(data, OUT_CHUNK))
            data = decoder.unconsumed_tail
        if not ctx.account_uncompressed(produced):
            ctx.incomplete("uncompressed budget spent while walking zip local headers")
            return -1
    return consumed - len(decoder.unused_data)


def _check_entries(stream: BinaryIO, listing: ZipListing, size: int, ctx: ScanContext) -> None:
    """Cross-check central vs local headers and report unsafe names, links, overlaps and bombs."""
    seen: dict[str, int] = {}
    spans: list[tuple[int, int, str]] = []
    for index, entry in enumerate(listing.entries):
        if index & 0xFF == 0:
            ctx.check()
        if listing.central:
            local = _read_local(stream, entry.local_offset)
            if local is None:
                ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"zip member {entry.name!r}: no local header at offset {entry.local_offset}",
                    offset=entry.local_offset,
                )
                continue
            lname, _lflags, lmethod, _lc, _lu, entry.data_offset = local
            if lname != entry.name:
                ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"zip member named {entry.name!r} in the central directory but {lname!r} in its local "
                    "header (loaders disagree on which name to trust)",
                    offset=entry.local_offset,
                    central=entry.name,
                    local=lname,
                )
            if lmethod != entry.method:
                ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"zip member {entry.name!r}: compression method differs between central and local header",
                    offset=entry.local_offset,
                )
        if entry.data_offset + entry.compressed_size > size:
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"zip member {entry.name!r} data runs past the end of the file",
                offset=entry.local_offset,
            )
        if entry.name in seen:
            ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                Severity.HIGH,
                f"duplicate zip member name {entry.name!r} (extractors keep different copies)",
                member=entry.name,
            )
        seen[entry.name] = index
        problem = path_problem(entry.name)
        if problem:
            ctx.add(RuleId.ARCHIVE_UNSAFE, problem[1], f"zip member name {entry.name!r} {problem[0]}")
        kind = stat.S_IFMT(entry.mode)
        if kind == stat.S_IFLNK:
            ctx.add(RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"zip member {entry.name!r} is a symbolic link")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            ctx.add(
                RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"zip member {entry.name!r} is a device or special file"
            )
        csize, usize = entry.compressed_size, entry.uncompressed_size
        if _declared_bomb(entry, ctx, listing.ratio_floor):
            ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                Severity.HIGH,
                f"zip member {entry.name!r} declares {usize} bytes from {csize} compressed "
                f"(ratio over {ctx.limits.max_ratio:.0f}: a decompression bomb)",
            )
        spans.append((entry.local_offset, max(entry.data_offset, entry.local_offset) + csize, entry.name))
    spans.sort()
    for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
        if s2 < e1:
            ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                Severity.HIGH,
                f"zip members {n1!r} and {n2!r} overlap in the file (an overlapping-entry zip bomb or a "
                "member hidden inside another)",
                offset=s2,
            )
            break
    if listing.central and spans:
        _check_unlisted(stream, spans, listing.cd_start, ctx)


def _check_unlisted(
    stream: BinaryIO, spans: list[tuple[int, int, str]], cd_start: int, ctx: ScanContext
) -> None:
    """Local headers in the gaps between listed members: members only a streaming unzipper would see."""
    ends = [e for _s, e, _n in spans]
    starts = [s for s, _e, _n in spans[1:]] + [cd_start]
    for gap_start, gap_end in zip(ends, starts, strict=True):
        pos = gap_start
        while pos + 4 <= gap_end:
            ctx.check()
            stream.seek(pos)
            chunk = stream.read(min(READ_CHUNK, gap_end - pos))
            hit = chunk.find(_LOCAL_SIG)
            if hit != -1 and _read_local(stream, pos + hit) is not None:
                stream.seek(pos + hit)
                ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"a zip local header at byte {pos + hit} is not listed in the central directory "
                    "(a member hidden from central-directory readers); scanned as '<unlisted>'",
                    offset=pos + hit,
                )
                ctx.scan_nested(window(stream, pos + hit, gap_end - pos - hit), "<unlisted>")
                return
            if len(chunk) < 4:
                break
            pos += len(chunk) - 3


def iter_zip_members(
    stream: BinaryIO,
    listing: ZipListing,
    ctx: ScanContext,
    *,
    select: Callable[[ZipEntry], bool] | None = None,
) -> Iterator[tuple[ZipEntry, BinaryIO]]:
    """Each file member's content as a seekable stream (a window for stored, a spool for compressed);
    members `select` turns down are not read at all.

    Members that cannot be read (encrypted, unsupported method, bomb, corrupt) are reported and skipped.
    """
    for entry in listing.entries:
        ctx.check()
        if entry.is_dir or (select is not None and not select(entry)):
            continue
        content = open_zip_member(stream, entry, ctx, ratio_floor=listing.ratio_floor)
        if content is None:
            continue
        try:
            yield entry, content
        finally:
            content.close()


def _declared_bomb(entry: ZipEntry, ctx: ScanContext, ratio_floor: int) -> bool:
    usize, csize = entry.uncompressed_size, entry.compressed_size
    return usize > ratio_floor and usize > ctx.limits.max_ratio * max(csize, 1)


def open_zip_member(
    stream: BinaryIO, entry: ZipEntry, ctx: ScanContext, *, ratio_floor: int = RATIO_FLOOR
) -> BinaryIO | None:
    """The member's bytes, or None after reporting why they cannot be scanned."""
    where = f"zip member {entry.name!r}"
    if entry.data_offset < 0:
        ctx.incomplete(f"{where} has no readable local header; its content cannot be scanned")
        return None
    if entry.encrypted:
        ctx.incomplete(f"{where} is encrypted; its content cannot be scanned")
        return None
    if _declared_bomb(entry, ctx, ratio_floor):
        ctx.incomplete(f"{where} not decompressed (declared ratio over the limit)")
        return None
    if entry.method == 0:
        if entry.compressed_size != entry.uncompressed_size and not entry.flags & 0x8:
            ctx.add(RuleId.MALFORMED, Severity.MEDIUM, f"{where} is stored but its two sizes differ")
        return window(stream, entry.data_offset, entry.compressed_size)
    kinds = {8: "deflate", 12: "bz2", 14: "lzma-raw"}
    kind = kinds.get(entry.method)
    if kind is None:
        ctx.incomplete(f"{where} uses compression method {entry.method}, which the scanner cannot read")
        return None
    raw = SubStream(stream, entry.data_offset, entry.compressed_size)
    filters = None
    try:
        if kind == "lzma-raw":
            header = raw.read(4)
            _version, props_len = struct.unpack("<HH", header)
            props = raw.read(props_len)
            filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)]  # type: ignore[attr-defined]
        inflated = inflate(
            raw.read,
            kind,
            ctx,
            what=where,
            max_output=entry.uncompressed_size if listing_sizes_known(entry) else None,
            filters=filters,
            ratio_floor=ratio_floor,
        )
    except BombError:
        ctx.incomplete(f"{where} not scanned: decompression stopped by a budget")
        return None
    except (zlib.error, lzma.LZMAError, OSError, ValueError, struct.error, EOFError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"{where} does not decompress: {exc}")
        ctx.incomplete(f"{where} not scanned (corrupt compressed data)")
        return None
    if not inflated.complete:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"{where}: compressed data is truncated")
    elif listing_sizes_known(entry) and inflated.size != entry.uncompressed_size:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"{where} inflates to {inflated.size} bytes, not the declared {entry.uncompressed_size}",
        )
    elif entry.crc and inflated.crc != entry.crc:
        ctx.add(RuleId.MALFORMED, Severity.MEDIUM, f"{where} fails its CRC check")
    return inflated.spool  # type: ignore[return-value]


def listing_sizes_known(entry: ZipEntry) -> bool:
    """Streamed members may record sizes only in a data descriptor (local header fallback)."""
    return not (entry.flags & 0x8 and entry.uncompressed_size == 0)


def scan_zip_prefix(stream: BinaryIO, listing: ZipListing, ctx: ScanContext, *, what: str = "zip") -> None:
    """Bytes before the first member are a file of their own to other loaders: reported and scanned."""
    if listing.prefix > 0:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"{listing.prefix} bytes before the first {what} member (a polyglot or self-extractor: other "
            "loaders read those bytes as a file of their own); scanned as '<prefix>'",
        )
        ctx.scan_nested(window(stream, 0, listing.prefix), "<prefix>")


def report_duplicate_names(listing: ZipListing, ctx: ScanContext, *, loader: str) -> None:
    """Model containers are read by member name: with two copies of a name the loader reads one copy and
    another tool the other, so the file is not one well-defined model (besides MS-ARCHIVE-UNSAFE)."""
    dupes = listing.duplicate_names()
    if dupes:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"duplicate member names {dupes[:5]}: {loader} and other readers may read different copies",
        )


def scan_zip_archive(
    stream: BinaryIO,
    ctx: ScanContext,
    *,
    what: str = "zip",
    handled: Callable[[ZipEntry], bool] | None = None,
    ratio_floor: int = RATIO_FLOOR,
) -> ZipListing:
    """Read, check and recursively scan every member of a zip; shared with the Keras scanner, which
    judges some members itself (`handled`, not read here) instead of dispatching them by content."""
    listing = read_zip(stream, ctx, ratio_floor=ratio_floor)
    scan_zip_prefix(stream, listing, ctx, what=what)
    select = None if handled is None else (lambda entry: not handled(entry))
    for entry, content in iter_zip_members(stream, listing, ctx, select=select):
        ctx.scan_nested(content, entry.name)
    ctx.set_metadata("archive_members", len(listing.entries))
    return listing


@register(Format.ZIP, sniff=sniff_zip, priority=52)
def scan_zip(stream: BinaryIO, ctx: ScanContext) -> None:
    """A plain zip: every member scanned by content."""
    scan_zip_archive(stream, ctx)
