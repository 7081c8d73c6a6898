"""Tar archives, read with `tarfile` (it is careful and handles GNU/PAX names), plus our own checks.

Every regular member is detected by content and scanned in place through a window on the file. Member
names go through the same extraction-path check as zip members; links, devices and duplicate names are
MS-ARCHIVE-UNSAFE; a PAX/GNU long-name header over the metadata limit is refused before `tarfile` reads
it whole; and anything but zero padding after the end of the archive is reported and scanned, because
`tar -i` and other readers see more members there.
"""

from __future__ import annotations

import posixpath
import re
import struct
import tarfile
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import READ_CHUNK, path_problem, stream_size, window


def _tar_checksum_ok(block: bytes) -> bool:
    """A v7/ustar header block whose checksum field matches its bytes (tarfile's own test)."""
    if len(block) < 512 or not block[:100].strip(b"\x00"):
        return False
    field = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        declared = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:512])
    signed = sum(struct.unpack("148b", block[:148])) + 8 * 0x20 + sum(struct.unpack("356b", block[156:512]))
    if declared not in (unsigned, signed):
        return False
    size_field = block[124:136].split(b"\x00", 1)[0].strip()
    return not size_field or bool(re.fullmatch(rb"[0-7]+", size_field)) or block[124] & 0x80 != 0


def sniff_tar(head: bytes, stream: BinaryIO) -> bool:
    if head[257:262] == b"ustar" and _tar_checksum_ok(head[:512]):
        return True
    return _tar_checksum_ok(head[:512])


@register(Format.TAR, sniff=sniff_tar, priority=51)
def scan_tar(stream: BinaryIO, ctx: ScanContext) -> None:
    """Every regular member scanned by content; names, links and devices checked; trailing data too."""
    size = stream_size(stream)
    names: set[str] = set()
    links: dict[str, tuple[str, bool]] = {}  # member -> (link target, is a symlink)
    regular: set[str] = set()
    count = 0
    end_offset = 0
    if _oversized_meta_header(stream, 0, ctx):
        return
    stream.seek(0)
    try:
        archive = tarfile.open(fileobj=stream, mode="r:")
    except (tarfile.TarError, OSError, ValueError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"tar archive does not parse: {exc}")
        ctx.incomplete("tar archive not scanned (unreadable header)")
        return
    try:
        while True:
            ctx.check()
            if _oversized_meta_header(stream, archive.offset, ctx):
                return
            try:
                member = archive.next()
            except (tarfile.TarError, OSError, ValueError, UnicodeError) as exc:
                ctx.add(
                    RuleId.MALFORMED, Severity.HIGH, f"tar header after member {count} does not parse: {exc}"
                )
                ctx.incomplete("tar archive only partly scanned (corrupt header)")
                return
            if member is None:
                break
            count += 1
            archive.members = []  # tarfile caches every member; we need none of them
            if count > ctx.limits.max_entries:
                ctx.add(
                    RuleId.ARCHIVE_UNSAFE,
                    Severity.HIGH,
                    f"tar has more than {ctx.limits.max_entries} members",
                )
                ctx.incomplete(f"tar members beyond the {ctx.limits.max_entries}-entry limit not scanned")
                return
            _check_tar_member(member, names, ctx)
            if member.issym() or member.islnk():
                links[posixpath.normpath(member.name)] = (member.linkname, member.issym())
            if member.isreg():
                regular.add(posixpath.normpath(member.name))
                if member.sparse is not None:
                    ctx.incomplete(f"tar member {member.name!r} is a sparse file; not scanned")
                    continue
                if member.offset_data + member.size > size:
                    ctx.add(RuleId.MALFORMED, Severity.HIGH, f"tar member {member.name!r} runs past the end")
                    ctx.incomplete(f"tar member {member.name!r} is truncated; not scanned")
                    continue
                ctx.scan_nested(window(stream, member.offset_data, member.size), member.name)
        end_offset = archive.offset
    finally:
        archive.close()
    _check_links(links, regular, {posixpath.normpath(n) for n in names}, ctx)
    _check_tar_tail(stream, end_offset, size, ctx)
    ctx.set_metadata("archive_members", count)


def _oversized_meta_header(stream: BinaryIO, offset: int, ctx: ScanContext) -> bool:
    """tarfile reads PAX and GNU long-name headers whole: refuse declared sizes over the metadata limit."""
    stream.seek(offset)
    block = stream.read(512)
    if len(block) < 512 or block[156:157] not in (b"x", b"g", b"L", b"K"):
        return False
    field = block[124:136]
    if field[0] & 0x80:  # base-256
        declared = int.from_bytes(field[1:], "big")
    else:
        digits = field.split(b"\x00", 1)[0].strip()
        declared = int(digits, 8) if re.fullmatch(rb"[0-7]+", digits) else 0
    if declared <= ctx.limits.max_metadata_bytes:
        return False
    ctx.add(
        RuleId.MALFORMED,
        Severity.HIGH,
        f"tar extended header at byte {offset} declares {declared} bytes (over the metadata limit)",
        offset=offset,
    )
    ctx.incomplete("tar archive only partly scanned (oversized extended header)")
    return True


def _check_tar_member(member: tarfile.TarInfo, names: set[str], ctx: ScanContext) -> None:
    name = member.name
    problem = path_problem(name)
    if problem:
        ctx.add(RuleId.ARCHIVE_UNSAFE, problem[1], f"tar member name {name!r} {problem[0]}")
    if name in names and not member.isdir():
        ctx.add(RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"duplicate tar member {name!r} (the later copy wins)")
    names.add(name)
    if member.issym() or member.islnk():
        pass  # judged once every member is known: _check_links
    elif member.ischr() or member.isblk() or member.isfifo():
        ctx.add(RuleId.ARCHIVE_UNSAFE, Severity.HIGH, f"tar member {name!r} is a device or FIFO")
    elif not (member.isreg() or member.isdir()):
        ctx.add(RuleId.MALFORMED, Severity.MEDIUM, f"tar member {name!r} has unusual type {member.type!r}")


MAX_LINK_HOPS = 8


class _LinkProblem(Exception):
    pass


def _resolve_link(links: dict[str, tuple[str, bool]], name: str) -> str:
    """Where link `name` lands, component by component as the file system resolves it (a link met on
    the way, directory or not, is followed), without ever leaving the archive root."""
    target, symbolic = links[name]
    current = name.split("/")[:-1] if symbolic else []
    pending = target.split("/")
    hops = 0
    if target.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", target):
        raise _LinkProblem(f"points outside the archive ({target!r} is absolute)")
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if "\\" in part:
            raise _LinkProblem(f"has a backslash in {target!r} (a directory separator on Windows only)")
        if part == "..":
            if not current:
                raise _LinkProblem(f"leaves the archive ({target!r} climbs above its root)")
            current.pop()
            continue
        candidate = "/".join([*current, part])
        if candidate in links:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise _LinkProblem("is part of a link cycle (or a chain longer than 8)")
            raw, sym = links[candidate]
            if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw):
                raise _LinkProblem(f"goes through {candidate!r}, which points outside the archive ({raw!r})")
            if not sym:
                current = []
            pending = raw.split("/") + pending
            continue
        current.append(part)
    return "/".join(current)


def _check_links(
    links: dict[str, tuple[str, bool]], regular: set[str], names: set[str], ctx: ScanContext
) -> None:
    """A link is refused only when it leaves the archive or points at nothing that was scanned.

    Symlink targets are relative to the link's directory, hard-link targets to the archive root (as
    tar extracts them); links met on the way are followed (up to MAX_LINK_HOPS; cycles are refused).
    A link that lands on a regular member (scanned in its own right) or a directory of the archive is
    what `tar` and tarfile's data filter accept: recorded in the metadata, not flagged."""
    resolved: dict[str, str] = {}
    for name, (target, symbolic) in links.items():
        kind = "symbolic link" if symbolic else "hard link"
        try:
            landing = _resolve_link(links, name)
            if landing not in regular and not any(n == landing or n.startswith(landing + "/") for n in names):
                raise _LinkProblem(f"points at {landing!r}, which is not in the archive (nothing scanned)")
        except _LinkProblem as exc:
            escapes = "outside" in str(exc) or "leaves" in str(exc)
            ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                Severity.CRITICAL if escapes else Severity.HIGH,
                f"tar member {name!r} is a {kind} to {target!r} that {exc}",
                link_target=target,
            )
            continue
        resolved[name] = landing
    if resolved:
        ctx.set_metadata("archive_links", dict(list(resolved.items())[:50]))


def _check_tar_tail(stream: BinaryIO, end: int, size: int, ctx: ScanContext) -> None:
    """After the last member only zero blocks may follow; anything else hides data from `tar`."""
    stream.seek(end)
    pos = end
    while pos < size:
        ctx.check()
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        stripped = chunk.lstrip(b"\x00")
        if stripped:
            first = pos + len(chunk) - len(stripped)
            ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"non-zero data after the end of the tar archive at byte {first} (tar -i and other readers "
                "see more members); scanned as '<trailing>'",
                offset=first,
            )
            ctx.scan_nested(window(stream, first, size - first), "<trailing>")
            return
        pos += len(chunk)
